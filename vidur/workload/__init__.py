"""Workloads: arrival processes, length generators, trace replay, request tables."""

from vidur.workload.arrivals import GammaArrivals, PoissonArrivals, StaticArrivals, TraceArrivals, arrival_at_rate
from vidur.workload.base import ArrivalProcess, LengthGenerator
from vidur.workload.lengths import (
    BoundedLengthGenerator,
    FixedLengths,
    LengthLimits,
    LognormalLengths,
    TraceLengths,
    UniformLengths,
    ZipfLengths,
    clip_lengths,
)
from vidur.workload.workload import RequestTable, build_requests

__all__ = [
    "ArrivalProcess",
    "BoundedLengthGenerator",
    "FixedLengths",
    "GammaArrivals",
    "LengthGenerator",
    "LengthLimits",
    "LognormalLengths",
    "PoissonArrivals",
    "RequestTable",
    "StaticArrivals",
    "TraceArrivals",
    "TraceLengths",
    "UniformLengths",
    "ZipfLengths",
    "arrival_at_rate",
    "build_requests",
    "clip_lengths",
]
