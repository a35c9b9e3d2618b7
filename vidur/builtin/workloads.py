"""Built-in workloads, registered as a plugin."""

from vidur.hookspecs import hookimpl
from vidur.workload.arrivals import GammaArrivals, PoissonArrivals, StaticArrivals, TraceArrivals
from vidur.workload.lengths import FixedLengths, LognormalLengths, TraceLengths, UniformLengths, ZipfLengths


@hookimpl
def vidur_register_workloads(register):
    for cls in (PoissonArrivals, GammaArrivals, StaticArrivals, TraceArrivals):
        register(cls)
    for cls in (FixedLengths, UniformLengths, ZipfLengths, LognormalLengths, TraceLengths):
        register(cls)
