"""Which runtime estimator prices a replica, with which configuration, and why.

:func:`resolve_estimator` is the one place that decides it, for ``vidur run``, ``search``,
``estimate`` and ``validate``:

- a named estimator (``runtime_estimator: {name: roofline, ...}``) gets exactly the options the
  scenario wrote;
- ``auto`` asks every registered estimator that declares an ``auto_priority``
  (:meth:`vidur.estimate.base.RuntimeEstimator.can_price`), highest priority first, and takes
  the first that accepts; those that decline are named in the provenance with their reason (a
  profile without attention measurements, no profile of this model...). The built-ins declare
  ``profile`` (100: a measured profile of this device, model and TP degree) and ``roofline``
  (0: always; calibrated on a profile of the same device when one exists). A plugin estimator
  takes part the same way; this module imports none of them;
- under ``auto``, the most specific calibration file for the chosen estimator
  (:mod:`vidur.store.calibrations`, e.g. values fitted from real vLLM runs) is applied on top of
  its configuration;
- the run's engine mode (``cluster.engine_mode``, or the reference executor's in ``vidur
  validate``) is set on estimators whose ``Config`` has an ``engine_mode`` field;
- a :class:`~vidur.estimate.wrap.WrappingEstimator` gets its ``inner`` (``auto`` or a name)
  resolved the same way (engine mode, profile, calibration go to the inner one); the record
  names the wrapper as the estimator and the inner one as ``wraps``.

The result carries a :class:`~vidur.resolve.provenance.Provenance` record.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from vidur.config import structure, unstructure
from vidur.errors import PluginError, VidurError
from vidur.estimate.base import Offer, PricingTarget
from vidur.estimate.wrap import WrappingEstimator
from vidur.resolve.provenance import Provenance
from vidur.store.calibrations import find_calibration, read_calibration
from vidur.store.profiles import root_label


@attrs.frozen
class ResolvedEstimator:
    """An estimator class, the configuration to build it with, and the provenance record."""

    cls: type
    config: Any
    provenance: Provenance
    #: what a :class:`~vidur.estimate.wrap.WrappingEstimator` wraps, resolved
    inner: "ResolvedEstimator | None" = None

    @property
    def name(self) -> str:
        return self.provenance.estimator

    def build(self, target: PricingTarget):
        """Construct the estimator for ``target`` (a wrapper with its inner estimator set)."""
        est = self.cls(self.config, target.model, target.device, target.node, target.tp, target.pp)
        if self.inner is not None:
            est.inner = self.inner.build(target)
        return est

    def completed(self, estimator) -> Provenance:
        """The provenance with the source the built estimator reports (:meth:`~vidur.estimate.base.
        RuntimeEstimator.data_source`) when resolution did not know it (a named estimator finding its data)."""
        prov = self.provenance
        if prov.source is None:
            src = estimator.data_source()
            if src:
                prov = attrs.evolve(prov, source=str(src), source_root=root_label(src))
        return prov


def auto_candidates(host) -> list[tuple[int, str, type]]:
    """(priority, name, class) of every registered estimator that takes part in ``auto``, highest first
    (ties by name)."""
    out = []
    for name in host.names("runtime_estimator"):
        cls = host.get("runtime_estimator", name)
        prio = getattr(cls, "auto_priority", None)
        if prio is not None:
            out.append((int(prio), name, cls))
    return sorted(out, key=lambda t: (-t[0], t[1]))


def _has_field(config: Any, field: str) -> bool:
    return attrs.has(type(config)) and field in {a.name for a in attrs.fields(type(config))}


def _with(cls: type, config: Any, changes: Mapping[str, Any], where: str) -> Any:
    """``config`` with ``changes`` applied, structured (and validated) again through ``cls.Config``."""
    if not changes:
        return config
    data = {**unstructure(config), **changes}
    return structure(data, cls.Config, root=where)


def _ask(name: str, cls: type, target: PricingTarget, host) -> Offer:
    """``cls.can_price(target)``; a plugin that raises or answers with something else than an
    :class:`Offer` is a one-line :class:`PluginError` naming it and its distribution."""

    def who() -> str:
        try:
            entry = host.entry("runtime_estimator", name)
        except VidurError:
            return f"runtime estimator {name!r}"
        return f"runtime estimator {name!r} from plugin {entry.plugin!r} ({entry.distribution})"

    try:
        offer = cls.can_price(target)
    except VidurError as exc:
        return Offer.decline(str(exc))
    except Exception as exc:
        raise PluginError(f"{who()} raised {type(exc).__name__}: {exc} in can_price()") from exc
    if not isinstance(offer, Offer):
        raise PluginError(f"{who()}: can_price() must return a vidur.estimate.base.Offer, got {type(offer).__name__}")
    return offer


def resolve_estimator(
    requested: str,
    config: Any,
    target: PricingTarget,
    host,
    *,
    profile: str | None = None,
    engine_mode_reason: str = "cluster.engine_mode",
    strict_engine_mode: bool = True,
    extra: Mapping[str, Any] | None = None,
    device_source: str = "",
    _wrapping: tuple[str, ...] = (),
) -> ResolvedEstimator:
    """Resolve ``requested`` (``auto`` or a registered name, with its structured ``config``) for
    ``target``. ``profile``: a profile directory the user named (``target.profile`` under
    ``auto``; a named estimator whose ``Config`` has a ``profile`` field gets it). ``target.engine_mode``, when set, goes into the
    ``engine_mode`` field; with ``strict_engine_mode`` an estimator without one is an error.
    ``extra``: further Config fields to set when the estimator has them (validate's
    ``cuda_graph_max_batch``)."""
    if requested != "auto":
        cls = host.get("runtime_estimator", requested)
        if isinstance(cls, type) and issubclass(cls, WrappingEstimator):
            if requested in _wrapping:
                raise VidurError(f"runtime_estimator {_wrapping[0]!r} wraps itself through "
                                 f"{' -> '.join(_wrapping + (requested,))}; set inner: auto or another estimator")
            return _resolve_wrapper(
                requested, cls, config, target, host, profile=profile, engine_mode_reason=engine_mode_reason,
                strict_engine_mode=strict_engine_mode, extra=extra, device_source=device_source,
                _wrapping=_wrapping + (requested,),
            )
    skipped: list[str] = []
    calibration = None
    if requested == "auto":
        cands = auto_candidates(host)
        if not cands:
            raise VidurError("runtime_estimator: auto found no estimator that takes part in auto; name one")
        if profile is not None:
            target = attrs.evolve(target, profile=str(profile))
        chosen = None
        for _prio, name, cls in cands:
            offer = _ask(name, cls, target, host)
            if offer.ok:
                chosen = (name, cls, offer)
                break
            skipped.append(f"{name}: {offer.reason}")
        if chosen is None:
            raise VidurError(
                f"runtime_estimator: auto found no estimator for {target.model.name} on {target.device.name} "
                f"(tp={target.tp}): {'; '.join(skipped)}"
            )
        name, cls, offer = chosen
        cfg, reason, source = offer.config if offer.config is not None else cls.Config(), offer.reason, offer.source
        calibration = find_calibration(name, target.device.name, target.model.name, target.tp, target.engine_mode)
        if calibration is not None:
            cfg = _with(cls, cfg, calibration.config, f"calibration file {calibration.path}")
    else:
        name = requested
        cls = host.get("runtime_estimator", name)
        cfg, reason, source = config, "named by the scenario", None
        if profile is not None and _has_field(cfg, "profile"):
            cfg = _with(cls, cfg, {"profile": str(profile)}, "runtime_estimator")
        named = getattr(cfg, "calibration", None)
        if named:  # a calibration file the scenario names
            calibration = read_calibration(named)
            if calibration.estimator != name:
                raise VidurError(f"calibration file {named} is for the {calibration.estimator!r} estimator, "
                                 f"not {name!r}")
            cfg = _with(cls, cfg, calibration.config, f"calibration file {named}")
    mode_reason = None
    if target.engine_mode is not None:
        if _has_field(cfg, "engine_mode"):
            mode_reason = engine_mode_reason
            if cfg.engine_mode != target.engine_mode:
                own = attrs.fields_dict(type(cfg))["engine_mode"].default
                if cfg.engine_mode != own:  # an explicit value replaced: said in the run header, never silent
                    mode_reason = f"{engine_mode_reason}; replaced runtime_estimator.engine_mode {cfg.engine_mode}"
                cfg = _with(cls, cfg, {"engine_mode": target.engine_mode}, "runtime_estimator")
        elif strict_engine_mode:
            raise VidurError(f"cluster.engine_mode is set but the {name!r} estimator has no engine mode")
    if extra:
        cfg = _with(cls, cfg, {k: v for k, v in extra.items() if _has_field(cfg, k)}, "runtime_estimator")
    prov = Provenance(
        estimator=name,
        requested=requested,
        reason=reason,
        source=source,
        source_root=root_label(source) if source else None,
        calibration=calibration.path if calibration is not None else None,
        fitted_from=calibration.fitted_from if calibration is not None else None,
        skipped=tuple(skipped),
        device=target.device.name,
        device_source=device_source,
        engine_mode=cfg.engine_mode if _has_field(cfg, "engine_mode") else None,
        engine_mode_reason=mode_reason,
    )
    return ResolvedEstimator(cls, cfg, prov)


def _resolve_wrapper(name: str, cls: type, config: Any, target: PricingTarget, host, **kw):
    """Resolve a wrapping estimator: its ``inner`` as if the scenario had named it."""
    if config is None:
        config = cls.Config()
    inner_name = getattr(config, "inner", None)
    if not isinstance(inner_name, str) or not inner_name:
        raise VidurError(f"runtime_estimator {name!r} wraps another estimator: its Config needs an "
                         f"'inner' field naming it (auto or a registered name), got {inner_name!r}")
    if inner_name == name:
        raise VidurError(f"runtime_estimator {name!r} cannot wrap itself; set inner: auto or another estimator")
    inner_cfg = None if inner_name == "auto" else host.get("runtime_estimator", inner_name).Config()
    inner = resolve_estimator(inner_name, inner_cfg, target, host, **kw)
    p = inner.provenance
    prov = attrs.evolve(
        p, estimator=name, requested=name, wraps=p.estimator,
        reason=f"wraps {inner_name}" + (f" -> {p.estimator}" if inner_name == "auto" else "") + f": {p.reason}",
    )
    return ResolvedEstimator(cls, config, prov, inner)
