"""Built-in memory planners, registered as a plugin."""

from vidur.memory.paged import PagedMemoryPlanner
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_memory_planners(register):
    """Register the ``paged`` (vLLM-style) planner."""
    register(PagedMemoryPlanner)
