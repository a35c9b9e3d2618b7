"""Memory planners: how many KV-cache blocks a replica gets (``vidur_register_memory_planners``).

A plugin subclasses :class:`MemoryPlanner` and returns a :class:`MemoryPlan`; the built-in
``paged`` planner is :class:`vidur.memory.paged.PagedMemoryPlanner`.
"""

from vidur.memory.base import MemoryPlan, MemoryPlanner

__all__ = ["MemoryPlan", "MemoryPlanner"]
