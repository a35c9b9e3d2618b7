"""Devices (accelerator SKUs) and nodes."""

from vidur.hardware.spec import DeviceSpec, NodeSpec

__all__ = ["DeviceSpec", "NodeSpec"]
