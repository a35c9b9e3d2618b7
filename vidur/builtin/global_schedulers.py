"""Built-in global schedulers, registered as a plugin."""

from vidur.builtin.policies.routing import LeastOutstanding, RandomRouting, RoundRobin
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_global_schedulers(register):
    for cls in (RoundRobin, RandomRouting, LeastOutstanding):
        register(cls)
