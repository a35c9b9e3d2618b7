"""Deprecated import path of the memory-planner API, kept for plugins written against it:
use :mod:`vidur.memory` (``from vidur.memory import MemoryPlan, MemoryPlanner``)."""

from vidur.memory.base import MemoryPlan, MemoryPlanner

__all__ = ["MemoryPlan", "MemoryPlanner"]
