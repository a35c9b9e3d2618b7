"""Devices described in a file: onboard a GPU that is not in the catalog without writing a plugin.

Wherever a device name is taken (``cluster.device`` in a scenario, the
devices of a search grid, ``vidur estimate --device``), a path to a YAML or
JSON file may stand instead::

    # devices/mi300x.yaml
    name: mi300x
    memory_gb: 192                  # usable device memory, GB (1e9 bytes)
    peak_tflops: 1307               # dense bf16, TFLOP/s
    memory_bandwidth_gbps: 5300     # GB/s
    price_per_hour: 3.0             # optional, US$ per GPU-hour
    price_source: "my cloud quote"  # optional
    description: "AMD Instinct MI300X"  # optional
    node: pcie_8                    # optional: the node type it comes in (default pcie_8)

The device goes by its ``name`` within the scenario or search that names the
file (:func:`vidur.resolve.device.resolve_device`; nothing is registered
process-wide); profiles of it live under ``<profiles root>/<name>/...``, and
the roofline estimator prices it from these figures, calibrated on any
profile of it.
"""

from __future__ import annotations

from pathlib import Path

from vidur.errors import VidurError
from vidur.hardware.spec import DeviceSpec

SUFFIXES = (".yaml", ".yml", ".json")
REQUIRED = ("name", "memory_gb", "peak_tflops", "memory_bandwidth_gbps")
OPTIONAL = ("price_per_hour", "price_source", "description", "node", "memory_efficiency")

def is_device_file(text: object) -> bool:
    """Does this device argument name a file (by its suffix) rather than a registered device?"""
    return isinstance(text, str) and text.lower().endswith(SUFFIXES)


def load_device_file(path: str | Path) -> DeviceSpec:
    """The :class:`DeviceSpec` a device file describes (one-line errors for anything wrong in it)."""
    return read_device_file(path)[0]


def read_device_file(path: str | Path) -> tuple[DeviceSpec, str | None]:
    """The file's device and the node type it names (None: not given)."""
    from vidur.config import load_yaml
    from vidur.plugins import suggest

    p = Path(path).expanduser()
    raw = load_yaml(p)  # JSON is YAML too
    for key in raw:
        if key not in REQUIRED + OPTIONAL:
            valid = REQUIRED + OPTIONAL
            raise VidurError(f"{p}: unknown key '{key}'{suggest(str(key), valid)}; valid keys: {', '.join(valid)}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise VidurError(f"{p}: missing '{missing[0]}' (a device file needs {', '.join(REQUIRED)})")
    name = raw["name"]
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise VidurError(f"{p}: name must be a short device name such as mi300x, got {name!r}")
    nums = {}
    for key in ("memory_gb", "peak_tflops", "memory_bandwidth_gbps") + (("price_per_hour",) if "price_per_hour" in raw else ()):
        v = raw[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise VidurError(f"{p}: {key} must be a positive number, got {v!r}")
        nums[key] = float(v)
    eff = raw.get("memory_efficiency")
    if eff is not None and (not isinstance(eff, (int, float)) or isinstance(eff, bool) or not 0 < eff <= 1):
        raise VidurError(f"{p}: memory_efficiency must be a fraction in (0, 1] (sustained / datasheet "
                         f"bandwidth, the roofline's default on this device), got {eff!r}")
    for key in ("price_source", "description", "node"):
        if key in raw and not isinstance(raw[key], str):
            raise VidurError(f"{p}: {key} must be a string, got {raw[key]!r}")
    if "node" in raw:
        from vidur.hardware.catalog import get_node

        get_node(raw["node"])  # a typo fails here, naming the valid node types
    spec = DeviceSpec(
        name=name,
        memory_bytes=int(nums["memory_gb"] * 1e9),
        peak_flops=nums["peak_tflops"] * 1e12,
        memory_bandwidth=nums["memory_bandwidth_gbps"] * 1e9,
        price_per_hour=nums.get("price_per_hour"),
        price_source=raw.get("price_source", f"device file {p}" if "price_per_hour" in raw else ""),
        description=raw.get("description", f"from {p}"),
        memory_efficiency=None if eff is None else float(eff),
    )
    return spec, raw.get("node")


def same_figures(a: DeviceSpec, b: DeviceSpec) -> bool:
    """Do two specs describe the same device (memory, peak, bandwidth, price, bandwidth efficiency)?"""
    return (a.memory_bytes, a.peak_flops, a.memory_bandwidth, a.price_per_hour, a.memory_efficiency) == (
        b.memory_bytes, b.peak_flops, b.memory_bandwidth, b.price_per_hour, b.memory_efficiency
    )
