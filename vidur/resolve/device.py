"""Which device a scenario or command names: a registered one, a device file, or one known only
from its profile (e.g. ``cpu``)."""

from __future__ import annotations

from vidur.errors import VidurError
from vidur.hardware.spec import DeviceSpec


def resolve_device(name: str, model_name: str, host=None, profile: str | None = None) -> DeviceSpec:
    """A registered device, or a device known only from a profile (e.g. ``cpu``)."""
    from vidur.store.profiles import list_profiles, read_metadata
    from vidur.plugins import get_host

    host = host or get_host()
    from vidur.hardware.device_file import is_device_file, register_device_file

    if is_device_file(name):
        return register_device_file(host, name)
    table = host.registries.get("device", {})
    if name in table:
        return table[name].obj
    candidates = ([{"device": name, "path": profile}] if profile else []) + list_profiles()
    for p in candidates:
        if p["device"] == name:
            meta = read_metadata(p["path"])
            if profile and meta.get("device") != name:
                continue
            info = meta.get("device_info", {})
            return DeviceSpec(
                name=name,
                memory_bytes=int(info.get("memory_bytes") or 1 << 34),
                peak_flops=1e12,
                memory_bandwidth=5e10,
                description=f"known only from its profile ({info.get('name', name)})",
            )
    if name.startswith("cuda") or name == "gpu":
        raise VidurError(
            f"vidur estimate prices a named device ({', '.join(sorted(table))}), not {name!r}; "
            f"to measure the local GPU use `vidur profile --device cuda`"
        )
    return host.get("device", name)  # raises with the valid names
