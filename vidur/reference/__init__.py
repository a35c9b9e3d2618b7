"""The reference PyTorch model: the decoder the profiler times and ``vidur validate`` runs.

:mod:`~vidur.reference.layers` (the operators and the decoder layer),
:mod:`~vidur.reference.attention` (the attention kernels), :mod:`~vidur.reference.shapes`
(per-rank shapes), :mod:`~vidur.reference.executor` (runs scheduler-formed batches), with its KV
state (:mod:`~vidur.reference.kv`), inputs (:mod:`~vidur.reference.inputs`) and CUDA graphs
(:mod:`~vidur.reference.graphs`); :mod:`~vidur.reference.device` picks the torch device. Only
``layers``, ``attention`` and the executor's kernels import torch, and nothing in the simulator
imports this package.
"""
