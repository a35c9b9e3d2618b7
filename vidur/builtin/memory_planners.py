"""Built-in memory planners, registered as a plugin."""

from vidur.memory.paged import PagedMemoryPlanner
from vidur.memory.sglang import SGLangMemoryPlanner
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_memory_planners(register):
    """Register the ``paged`` (vLLM-style) and ``sglang`` (SGLang's token pool) planners."""
    register(PagedMemoryPlanner)
    register(SGLangMemoryPlanner)
