"""The whole vidur plugin contract.

Every hook carries the ``vidur_`` prefix. Registrar hooks receive a
``register`` callback and call it once per thing they provide; each class
names itself with a ``name`` class attribute and carries its own attrs
``Config`` class. Hooks are called when a simulation is *set up*, never
inside the event loop: per-batch decisions are plain method calls on the
policy objects the registrars provided.
"""

from __future__ import annotations

import pluggy

NAME = "vidur"

hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)


# --- registrars: what a plugin adds -------------------------------------


@hookspec
def vidur_register_global_schedulers(register):
    """Register global (cluster-level) schedulers.

    Call ``register(cls)`` for each class; ``cls`` subclasses
    :class:`vidur.scheduler.global_base.GlobalScheduler`, has a unique
    ``name`` and an attrs ``Config`` class.
    """


@hookspec
def vidur_register_replica_schedulers(register):
    """Register replica batching policies.

    Call ``register(cls)`` for each class; ``cls`` subclasses
    :class:`vidur.scheduler.base.ReplicaScheduler`, has a unique ``name``
    and an attrs ``Config`` class.
    """


@hookspec
def vidur_register_memory_planners(register):
    """Register memory planners (how much KV cache a replica gets).

    Call ``register(cls)``; ``cls`` subclasses
    :class:`vidur.memory.base.MemoryPlanner`, has a ``name`` and ``Config``.
    """


@hookspec
def vidur_register_runtime_estimators(register):
    """Register runtime estimators (how long one batch takes).

    Call ``register(cls)``; ``cls`` subclasses
    :class:`vidur.estimate.base.RuntimeEstimator`, has a ``name`` and ``Config``.
    """


@hookspec
def vidur_register_workloads(register):
    """Register workload generators: arrival processes and length generators.

    Call ``register(cls)``; ``cls`` subclasses
    :class:`vidur.workload.base.ArrivalProcess` or
    :class:`vidur.workload.base.LengthGenerator`, has a ``name`` and ``Config``.
    """


@hookspec
def vidur_register_models(register):
    """Register model architectures.

    Call ``register(spec)`` with a :class:`vidur.model.spec.ModelSpec`, named
    by its Hugging Face id (``meta-llama/Meta-Llama-3-8B``).
    """


@hookspec
def vidur_register_devices(register):
    """Register accelerator SKUs and node types.

    Call ``register(spec)`` with a :class:`vidur.hardware.DeviceSpec` or a
    :class:`vidur.hardware.NodeSpec`.
    """


@hookspec
def vidur_register_commands(cli):
    """Add sub-commands to the ``vidur`` command line.

    ``cli`` is the root :class:`argparse._SubParsersAction`; call
    ``cli.add_parser(name, help=...)`` and ``set_defaults(func=handler)``
    where ``handler(args) -> int`` returns the exit status.
    """


# --- coarse observers -----------------------------------------------------


@hookspec
def vidur_simulation_start(sim):
    """Called once before the event loop starts, with the built ``Simulation``."""


@hookspec
def vidur_simulation_end(sim, result):
    """Called once after the event loop ends, with the ``SimulationResult``."""
