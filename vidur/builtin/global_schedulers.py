"""Built-in global schedulers, registered as a plugin."""

from vidur.builtin.policies.routing import LeastOutstanding, PrefixAware, RandomRouting, RoundRobin, SessionAffinity
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_global_schedulers(register):
    for cls in (RoundRobin, RandomRouting, LeastOutstanding, PrefixAware, SessionAffinity):
        register(cls)
