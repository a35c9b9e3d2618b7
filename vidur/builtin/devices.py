"""Built-in devices and node types, registered as a plugin."""

from vidur.hardware.catalog import DEVICES, NODES
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_devices(register):
    """Register the shipped accelerator SKUs and node types."""
    for spec in DEVICES:
        register(spec)
    for spec in NODES:
        register(spec)
