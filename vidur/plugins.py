"""Plugin manager: built-ins by name first, then third-party entry points.

Built-in implementations are ordinary plugins registered from the modules in
``BUILTIN_PLUGINS``; third-party ones come from the ``vidur`` entry-point
group. ``VIDUR_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party autoload;
``VIDUR_BLOCK_PLUGINS=a,b`` blocks plugins (built-in ones too) by name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import warnings
from typing import Any, Callable

import pluggy

from vidur import hookspecs
from vidur.errors import PluginError, VidurError
from vidur.hookspecs import NAME

DISTRIBUTION = "vidur-sim"

BUILTIN_PLUGINS = (
    "vidur.builtin.replica_schedulers",
    "vidur.builtin.global_schedulers",
    "vidur.builtin.memory_planners",
    "vidur.builtin.estimators",
    "vidur.builtin.workloads",
    "vidur.builtin.models",
    "vidur.builtin.devices",
    "vidur.builtin.commands",
    "vidur.builtin.profile_estimators",
    "vidur.builtin.onboarding_commands",
    "vidur.builtin.search_commands",
    "vidur.builtin.sweep_commands",
    "vidur.builtin.validate_commands",
    "vidur.builtin.calibrate_command",
)

#: registry kind -> the registrar hook that fills it
KINDS = {
    "global_scheduler": "vidur_register_global_schedulers",
    "replica_scheduler": "vidur_register_replica_schedulers",
    "memory_planner": "vidur_register_memory_planners",
    "runtime_estimator": "vidur_register_runtime_estimators",
    "workload": "vidur_register_workloads",
    "model": "vidur_register_models",
    "device": "vidur_register_devices",
}

AUTOLOAD_ENV = "VIDUR_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "VIDUR_BLOCK_PLUGINS"


class PluginSkipped(UserWarning):
    """An installed plugin was skipped because its entry point is broken."""


class Entry:
    """One registered thing: the object, and which plugin/distribution gave it."""

    __slots__ = ("obj", "plugin", "distribution")

    def __init__(self, obj: Any, plugin: str, distribution: str):
        self.obj = obj
        self.plugin = plugin
        self.distribution = distribution


def suggest(name: str, valid) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _sub_kind(obj: Any, kind: str) -> str:
    """Workloads split into arrival/length; devices into device/node."""
    if kind == "workload":
        return f"workload.{getattr(obj, 'kind', '?')}"
    if kind == "device":
        return "node" if hasattr(obj, "num_devices") else "device"
    return kind


class PluginHost:
    """A pluggy manager plus the name registries its registrar hooks fill."""

    def __init__(self, *, autoload: bool | None = None, blocked: tuple[str, ...] | None = None):
        self.pm = pluggy.PluginManager(NAME)
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, str] = {}  # entry-point name -> "distribution version"
        #: entry points skipped as broken: name -> the one-line reason (also warned)
        self.skipped: dict[str, str] = {}
        if blocked is None:
            blocked = tuple(b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip())
        for name in blocked:
            self.pm.set_blocked(name)
        for modname in BUILTIN_PLUGINS:
            if self.pm.is_blocked(modname):
                continue
            self.register(importlib.import_module(modname), name=modname)
        if autoload is None:
            autoload = not os.environ.get(AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        self._check_pending()
        self._registries: dict[str, dict[str, Entry]] | None = None

    def _load_entry_points(self) -> None:
        """Register each ``vidur`` entry point (as pluggy's loader does). A broken
        one (it fails to import, gives an object with no vidur hooks, or its hooks
        do not match the specs) is skipped with a one-line warning naming the
        entry point and its distribution, so one bad install breaks no command."""
        from importlib.metadata import distributions

        for dist in list(distributions()):
            eps = [ep for ep in dist.entry_points if ep.group == NAME]
            if not eps:
                continue
            label = f"{dist.metadata['name']} {dist.version}"
            for ep in eps:
                if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:
                    self._skip(ep.name, f"plugin {ep.name!r} ({label}) failed to import {ep.value}: "
                                        f"{type(exc).__name__}: {exc}")
                    continue
                if not any(a.startswith("vidur_") for a in dir(plugin)):
                    self._skip(ep.name, f"plugin {ep.name!r} ({label}): entry point {ep.value} is a "
                                        f"{type(plugin).__name__} with no vidur_* hooks; point it at the module "
                                        "(or object) holding the @hookimpl functions")
                    continue
                self._dists[ep.name] = label
                try:
                    self.register(plugin, name=ep.name)
                except PluginError as exc:
                    self._skip(ep.name, str(exc))

    def is_entry_point(self, name: str | None) -> bool:
        """Whether plugin ``name`` was loaded from an installed entry point."""
        return name in self._dists

    def skip_broken(self, name: str, why: str) -> None:
        """Unregister the entry-point plugin ``name`` and warn, in one line, why."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
            self._registries = None
        self._skip(name, why)

    def _skip(self, name: str, why: str) -> None:
        """Skip the broken entry point ``name`` with a one-line warning."""
        self.skipped[name] = why
        self._dists.pop(name, None)
        warnings.warn(f"{why}; skipped it: fix or uninstall it, or block it with {BLOCK_ENV}={name}",
                      PluginSkipped, stacklevel=3)

    # -- registration -------------------------------------------------
    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object or module; a hook whose signature does not
        match its spec, or a hook vidur does not define, is an error."""
        label = name or getattr(plugin, "__name__", None) or repr(plugin)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):  # pluggy leaves it half registered
                self.pm.unregister(plugin)
            raise PluginError(
                f"plugin {label!r} ({self._dist_label(name)}) does not match the vidur hook specs: "
                f"{_mismatch(plugin, exc)}"
            ) from None
        except ValueError as exc:
            raise PluginError(f"cannot register plugin {label!r}: {exc}") from None
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.pm.unregister(plugin)
            raise PluginError(
                f"plugin {label!r} ({self._dist_label(name)}) {_unknown_hooks(plugin)}"
            ) from None
        self._registries = None

    def unregister(self, plugin: Any = None, name: str | None = None) -> None:
        """Remove a plugin registered earlier (by object or by name)."""
        self.pm.unregister(plugin, name=name)
        self._registries = None

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(f"plugin {name!r} ({self._dist_label(name)}) {_unknown_hooks(exc.plugin)}") from None

    def _dist_label(self, name: str | None) -> str:
        if name in self._dists:
            return self._dists[name]
        if name and name.startswith("vidur."):
            from vidur import __version__

            return f"{DISTRIBUTION} {__version__}"
        return "registered in-process"

    def distribution_of(self, plugin: Any) -> str:
        """The distribution that installed ``plugin`` (built-ins: vidur-sim)."""
        for plug, dist in self.pm.list_plugin_distinfo():
            if plug is plugin:
                meta = getattr(dist, "metadata", None)
                name = meta["name"] if meta is not None else getattr(dist, "project_name", "?")
                return f"{name} {dist.version}"
        return self._dist_label(self.pm.get_name(plugin))

    # -- registries ---------------------------------------------------
    @property
    def registries(self) -> dict[str, dict[str, Entry]]:
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def _collect(self) -> dict[str, dict[str, Entry]]:
        """Fill the registries; an entry-point plugin whose registrar raises is
        skipped (with a warning) and the registries are filled again without it."""
        while True:
            try:
                return self._collect_once()
            except _BrokenEntryPoint as broken:
                self.skip_broken(broken.name, broken.why)

    def _collect_once(self) -> dict[str, dict[str, Entry]]:
        regs: dict[str, dict[str, Entry]] = {}
        for kind, hookname in KINDS.items():
            hook = getattr(self.pm.hook, hookname)
            # call implementations one by one so each registration is attributed
            for impl in reversed(hook.get_hookimpls()):
                plugin_name = impl.plugin_name
                dist = self.distribution_of(impl.plugin)
                register = self._make_register(regs, kind, plugin_name, dist)
                try:
                    impl.function(register=register)
                except VidurError:
                    raise
                except Exception as exc:
                    why = f"plugin {plugin_name!r} ({dist}) failed in {hookname}: {type(exc).__name__}: {exc}"
                    if plugin_name in self._dists:
                        raise _BrokenEntryPoint(plugin_name, why) from None
                    raise PluginError(why) from None
        return regs

    @staticmethod
    def _make_register(regs, kind: str, plugin_name: str, dist: str) -> Callable[[Any], Any]:
        def register(obj: Any) -> Any:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin_name!r} ({dist}) registered a {kind} without a 'name'")
            sub = _sub_kind(obj, kind)
            table = regs.setdefault(sub, {})
            if name in table:
                other = table[name]
                raise PluginError(
                    f"two plugins claim the {sub.replace('_', ' ')} name {name!r}: "
                    f"{other.plugin!r} ({other.distribution}) and {plugin_name!r} ({dist}); "
                    f"uninstall one or block it with {BLOCK_ENV}"
                )
            table[name] = Entry(obj, plugin_name, dist)
            return obj

        return register

    def names(self, kind: str) -> list[str]:
        """Sorted names registered under ``kind``."""
        return sorted(self.registries.get(kind, {}))

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name`` under ``kind``; unknown names list the valid ones."""
        table = self.registries.get(kind, {})
        try:
            return table[name].obj
        except KeyError:
            label = kind.replace("workload.", "").replace("_", " ")
            valid = ", ".join(sorted(table)) or "none installed"
            raise VidurError(f"unknown {label} {name!r}{suggest(name, table)}; valid: {valid}") from None

    def entry(self, kind: str, name: str) -> Entry:
        self.get(kind, name)
        return self.registries[kind][name]

    # -- observers ----------------------------------------------------
    def call_observer(self, hookname: str, **kwargs: Any) -> None:
        """Call a coarse observer hook; a failing plugin is named in the error."""
        hook = getattr(self.pm.hook, hookname)
        for impl in reversed(hook.get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except VidurError:
                raise
            except Exception as exc:
                dist = self.distribution_of(impl.plugin)
                raise PluginError(
                    f"plugin {impl.plugin_name!r} ({dist}) failed in {hookname}: {type(exc).__name__}: {exc}"
                ) from None


class _BrokenEntryPoint(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(why)
        self.name, self.why = name, why


def _mismatch(plugin: Any, exc: Exception) -> str:
    """One line saying which hook implementation disagrees with its spec."""
    for attr in dir(plugin):
        spec = getattr(hookspecs, attr, None) if attr.startswith("vidur_") else None
        impl = getattr(plugin, attr, None)
        if spec is None or not callable(impl):
            continue
        try:
            extra = set(inspect.signature(impl).parameters) - set(inspect.signature(spec).parameters)
        except (TypeError, ValueError):
            continue
        if extra:
            return (
                f"{signature_of(impl)} takes {', '.join(repr(a) for a in sorted(extra))}, which the spec "
                f"{signature_of(spec)} does not provide; use the spec's argument names (a subset is fine)"
            )
    return " ".join(str(exc).split())


def _unknown_hooks(plugin: Any) -> str:
    """``implements vidur_x, which is not a vidur hook (did you mean ...)``."""
    specs = [n for n in dir(hookspecs) if n.startswith("vidur_")]
    unknown = [
        a for a in dir(plugin)
        if a.startswith("vidur_") and a not in specs and getattr(getattr(plugin, a, None), f"{NAME}_impl", None) is not None
    ]
    if not unknown:
        return "implements a hook vidur does not define"
    return "; ".join(f"implements {u}, which is not a vidur hook{suggest(u, specs)}" for u in unknown)


_DEFAULT: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide default plugin host (built lazily)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PluginHost()
    return _DEFAULT


def set_host(host: PluginHost | None) -> None:
    """Replace (or with None, reset) the process-wide default host; for tests."""
    global _DEFAULT
    _DEFAULT = host


def signature_of(func: Callable) -> str:
    """``name(arg, ...)`` as documented in CONTRIBUTING.md."""
    return f"{func.__name__}{inspect.signature(func)}"
