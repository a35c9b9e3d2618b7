"""Built-in replica schedulers, registered as a plugin."""

from vidur.builtin.policies.faster_transformer import FasterTransformerScheduler
from vidur.builtin.policies.lightllm import LightLLMScheduler
from vidur.builtin.policies.orca import OrcaScheduler
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.sglang import SGLangScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.builtin.policies.vllm_v1 import VLLMV1Scheduler
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_replica_schedulers(register):
    for cls in (VLLMScheduler, VLLMV1Scheduler, SarathiScheduler, OrcaScheduler, FasterTransformerScheduler, LightLLMScheduler,
                SGLangScheduler):
        register(cls)
