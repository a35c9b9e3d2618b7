"""vidur-plugin-example: an SRPF replica scheduler and a KV-aware router.

Installed, it is found through the ``vidur`` entry point ``example`` (see
pyproject.toml); the hooks below are all a plugin needs.
"""

from vidur.hookspecs import hookimpl
from vidur_plugin_example.kv_aware import KVAwareConfig, KVAwareRouter
from vidur_plugin_example.srpf import SRPFConfig, SRPFScheduler

__version__ = "0.1.0"
__all__ = ["KVAwareConfig", "KVAwareRouter", "SRPFConfig", "SRPFScheduler"]


@hookimpl
def vidur_register_replica_schedulers(register):
    register(SRPFScheduler)


@hookimpl
def vidur_register_global_schedulers(register):
    register(KVAwareRouter)
