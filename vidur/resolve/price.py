"""Price one iteration with the resolved estimator (``vidur estimate``)."""

from __future__ import annotations

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape, PricingTarget, apply_policy_cuda_graphs
from vidur.model.spec import ModelSpec
from vidur.resolve.device import resolve_device
from vidur.resolve.estimator import resolve_estimator


def estimate_iteration(
    model,
    device: str,
    tp: int = 1,
    prefills=(),
    decodes=(),
    *,
    pp: int = 1,
    node: str | None = None,
    estimator: str = "auto",
    profile: str | None = None,
    engine_mode: str | None = None,
    engine: str | None = None,
    policy=None,
    host=None,
) -> dict:
    """Price one iteration: ``prefills=[(chunk, context)]``, ``decodes=[(batch, context)]``.

    Returns ``{"gpu_ms", "total_ms", "estimator", "ops": {op: ms}, ...}``:
    ``gpu_ms`` is the device time of the forward pass (all layers, embedding,
    LM head, pipeline transfers), ``total_ms`` adds launch stalls and the
    host overhead of the engine mode (the larger of the two when the policy's engine overlaps
    them). ``engine``: the serving engine priced (a replica scheduler's ``models_engine``: under
    ``auto`` a profile of other kernels is passed over, as ``vidur run`` does); ``policy``: called
    with the built estimator, returns the replica scheduler whose engine settings apply, as in a
    run (its CUDA-graph sizes; ``host_overlap``: a step takes max(device, host)).
    """
    from vidur.model.catalog import check_parallelism, load_model
    from vidur.plugins import get_host

    host = host or get_host()
    spec = load_model(model, host) if not isinstance(model, ModelSpec) else model
    dev = resolve_device(device, host, node=node, profile=profile)
    check_parallelism(spec, tp, pp, dev.node)
    if dev.from_profile_only:  # a device known only from its profile has nothing else to price it
        engine = None
    target = PricingTarget(spec, dev.spec, dev.node, tp, pp, engine_mode=engine_mode, engine=engine)
    config = None if estimator == "auto" else host.get("runtime_estimator", estimator).Config()
    resolved = resolve_estimator(
        estimator, config, target, host, profile=profile, engine_mode_reason="--engine-mode", device_source=dev.source
    )
    name, reason = resolved.name, resolved.provenance.reason
    est = resolved.build(target)
    provenance = resolved.completed(est)
    overlap = False
    if policy is not None:
        sched = policy(est)
        apply_policy_cuda_graphs(est, sched)
        # as the event loop: host work overlaps the GPU on single-stage replicas only (a pipelined
        # batch adds it to its first stage)
        overlap = bool(getattr(sched, "host_overlap", False)) and pp == 1
    dev, node_spec = dev.spec, dev.node
    shape = BatchShape()
    for q, ctx in prefills:
        if q < 1 or ctx < 0:
            raise VidurError(f"a prefill chunk needs at least 1 token and a non-negative context, got {q}:{ctx}")
        shape.add_prefill(int(q), int(ctx))
    for b, ctx in decodes:
        if b < 1 or ctx < 0:
            raise VidurError(f"a decode group needs a batch of at least 1 and a non-negative context, got {b}:{ctx}")
        shape.add_decodes(int(b), int(ctx))  # constant time: --decode 10**12:1 must not loop
    if shape.num_tokens == 0:
        raise VidurError("nothing to price: give --prefill CHUNK[:CONTEXT] and/or --decode BATCH:CONTEXT")
    L = spec.num_layers
    per_layer = est.breakdown(shape)
    stall = per_layer.pop("launch_stall", 0.0)
    ops = {k: v * L * 1e3 for k, v in per_layer.items()}
    ops["embed"] = est.embed_time(shape.num_tokens) * 1e3
    ops["head"] = est.head_time(shape.num_seqs) * 1e3
    if pp > 1:
        ops["pp_send_recv"] = (pp - 1) * est.pp_transfer_time(shape.num_tokens) * 1e3
    forward = est.forward_time(shape)
    gpu_ms = forward * 1e3 - stall * L * 1e3
    cpu = est.cpu_overhead(shape.num_seqs)
    total_ms = max(forward, cpu) * 1e3 if overlap else forward * 1e3 + cpu * 1e3
    return {
        "gpu_ms": gpu_ms,
        "total_ms": total_ms,
        "estimator": name,
        "ops": ops,
        "estimator_detail": est.describe(),
        "estimator_reason": reason,
        "provenance": provenance.to_dict(),
        "cpu_overhead_ms": cpu * 1e3,
        "host_overlap": overlap,
        "launch_stall_ms": stall * L * 1e3,
        "model": spec.name,
        "device": dev.name,
        "node": node_spec.name,
        "tp": tp,
        "pp": pp,
        "batch": {
            "num_tokens": shape.num_tokens,
            "num_prefill": shape.num_prefill,
            "prefill_tokens": shape.prefill_tokens,
            "num_decode": shape.num_decode,
            "decode_kv": shape.decode_kv,
        },
    }
