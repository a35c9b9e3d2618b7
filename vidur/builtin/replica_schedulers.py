"""Built-in replica schedulers, registered as a plugin."""

from vidur.builtin.policies.faster_transformer import FasterTransformerScheduler
from vidur.builtin.policies.lightllm import LightLLMScheduler
from vidur.builtin.policies.orca import OrcaScheduler
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_replica_schedulers(register):
    for cls in (VLLMScheduler, SarathiScheduler, OrcaScheduler, FasterTransformerScheduler, LightLLMScheduler):
        register(cls)
