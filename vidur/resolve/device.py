"""Which device a scenario or command names, and the node it sits in.

A device name resolves, in order, to a device file (a path ending in ``.yaml``/``.yml``/
``.json``, :mod:`vidur.hardware.device_file`), a device a plugin registered (the built-in
catalog included), or a device known only from a profile of it (e.g. ``cpu``). Nothing is
registered anywhere: the result belongs to the caller (one simulation, one search, one command),
so loading a scenario changes no process-wide state.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from vidur.errors import VidurError
from vidur.hardware.catalog import default_node
from vidur.hardware.device_file import is_device_file, read_device_file, same_figures
from vidur.hardware.spec import DeviceSpec, NodeSpec


@attrs.frozen
class ResolvedDevice:
    """A device, the node type it runs in, and where both came from (for the provenance record)."""

    spec: DeviceSpec
    node: NodeSpec
    source: str  # "catalog", "plugin 'x' (dist 1.0)", "device file PATH", "profile PATH"

    @property
    def from_profile_only(self) -> bool:
        """True for a device known only from a profile of it (e.g. ``cpu``): no datasheet figures,
        so only its profiles can price it."""
        return self.source.startswith(PROFILE_ONLY)


#: how a device known only from a profile says where it came from
PROFILE_ONLY = "known only from its profile"


def _profile_device(name: str, profile: str | None) -> tuple[DeviceSpec, str] | None:
    """A device known only from a profile of it: its memory from the profile's metadata."""
    from vidur.store.profiles import list_profiles, read_metadata

    candidates = ([{"device": name, "path": profile}] if profile else []) + list_profiles()
    for p in candidates:
        if p["device"] != name:
            continue
        meta = read_metadata(p["path"])
        if profile and meta.get("device") != name:
            continue
        info = meta.get("device_info", {})
        spec = DeviceSpec(
            name=name,
            memory_bytes=int(info.get("memory_bytes") or 1 << 34),
            peak_flops=1e12,
            memory_bandwidth=5e10,
            description=f"known only from its profile ({info.get('name', name)})",
        )
        return spec, f"{PROFILE_ONLY} {p['path']}"
    return None


def resolve_device(
    name: str,
    host=None,
    *,
    node: str | None = None,
    device_file: str | None = None,
    profile: str | None = None,
) -> ResolvedDevice:
    """Resolve ``name`` (a device name or a device file) and its node (``node``, else the file's
    ``node``, else the device's usual node). ``device_file``: the file a scenario recorded for
    ``name``; ``profile``: a profile directory that may describe an unregistered device."""
    if host is None:
        from vidur.plugins import get_host

        host = get_host()
    file_node = None
    src = device_file or (name if is_device_file(name) else None)
    if src is not None:
        spec, file_node = read_device_file(src)
        if device_file and not is_device_file(name) and name != spec.name:
            raise VidurError(f"cluster.device is {name!r} but cluster.device_file {src} describes {spec.name!r}; set one of them")
        registered = host.registries.get("device", {}).get(spec.name)
        if registered is not None and not same_figures(registered.obj, spec):
            raise VidurError(
                f"device file {src} names device {spec.name!r}, which is already registered with other figures; "
                f"give the file's device another name"
            )
        source = f"device file {Path(src).expanduser().resolve()}"
    else:
        table = host.registries.get("device", {})
        if name in table:
            entry = table[name]
            spec = entry.obj
            source = "catalog" if entry.plugin.startswith("vidur.builtin") else f"plugin {entry.plugin!r} ({entry.distribution})"
        else:
            found = _profile_device(name, profile)
            if found is None:
                if name.startswith("cuda") or name == "gpu":
                    raise VidurError(
                        f"a device is a name ({', '.join(sorted(table))}) or a device file, not {name!r}; "
                        f"to measure the local GPU use `vidur profile --device cuda`"
                    )
                host.get("device", name)  # raises with the valid names
            spec, source = found
    if node is not None:
        node_spec = host.get("node", node)
    elif file_node is not None:
        node_spec = host.get("node", file_node)
    else:
        node_spec = default_node(spec.name)
    return ResolvedDevice(spec, node_spec, source)
