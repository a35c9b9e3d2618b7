"""The torch device the reference model runs on: which one, whether it is the scenario's GPU, memory."""

from __future__ import annotations

import os

from vidur.errors import VidurError


def torch_module(purpose: str = "the reference model", extra: str = "validate"):
    """``torch``, or a one-line error naming the extra that installs it."""
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised where torch is absent
        raise VidurError(f"{purpose} needs PyTorch; install it with: pip install 'vidur-sim[{extra}]'") from None
    return torch


def torch_device(requested: str | None):
    """``cpu`` / ``cuda`` / ``cuda:N`` (None: CUDA when present, else the CPU) -> ``torch.device``,
    checked, with a one-line error when CUDA is absent. The profiler and ``vidur validate`` both use it."""
    torch = torch_module()
    if requested is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    d = str(requested).strip().lower()
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + (" (a CPU-only build)" if torch.version.cuda is None else "")
            raise VidurError(f"--device {requested} was requested but no CUDA GPU is available to {build}; use --device cpu")
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise VidurError(f"unknown --device {requested!r}; use cpu, cuda or cuda:N") from None
        if dev.index is None:  # some CUDA APIs need an explicit index: use the current device
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise VidurError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise VidurError(f"unknown --device {requested!r}; use cpu, cuda or cuda:N")


def gpu_sku(name: str) -> str | None:
    """The device catalog name of a CUDA device name (``NVIDIA H100 80GB HBM3`` -> ``h100``), or None
    when the SKU is not in the catalog (the profiler names such a GPU the same way)."""
    from vidur.hardware.catalog import DEVICES, sku_of_gpu_name

    sku = sku_of_gpu_name(name)
    return sku if sku in {d.name for d in DEVICES} else None


def flushing_denormals(torch) -> bool:
    """Whether this thread already flushes denormal floats to zero (``torch.set_flush_denormal``)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


def available_memory(device: str) -> int:
    torch = torch_module()
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 1 << 62
