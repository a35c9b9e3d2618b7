"""Built-in workloads, registered as a plugin."""

from vidur.hookspecs import hookimpl
from vidur.workload.arrivals import GammaArrivals, PoissonArrivals, StaticArrivals, TraceArrivals
from vidur.workload.lengths import FixedLengths, LognormalLengths, TraceLengths, UniformLengths, ZipfLengths
from vidur.workload.prefix_workloads import AgenticLengths, MultiTurnLengths, SharedPrefixLengths


@hookimpl
def vidur_register_workloads(register):
    for cls in (PoissonArrivals, GammaArrivals, StaticArrivals, TraceArrivals):
        register(cls)
    for cls in (FixedLengths, UniformLengths, ZipfLengths, LognormalLengths, TraceLengths,
                SharedPrefixLengths, MultiTurnLengths, AgenticLengths):
        register(cls)
