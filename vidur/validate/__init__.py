"""Fidelity proof: the simulator measured against real execution.

- :mod:`vidur.reference.executor`: the PyTorch reference executor (needs torch;
  imported lazily, never by the simulator core).
- :mod:`vidur.validate.run`: ``vidur validate`` (the same scheduler drives the
  executor and the simulator; :func:`~vidur.validate.run.validate_scenario`).
- :mod:`vidur.validate.vllm_results`: ``vidur compare --real`` (vLLM
  ``bench serve`` results against a simulation of the same trace).
- :mod:`vidur.validate.compare`: the error tables, JSON and plots they share.
"""
