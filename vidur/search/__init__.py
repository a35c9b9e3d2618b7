"""Capacity planning: the cheapest deployment that meets latency SLOs.

For every configuration of a grid (device × TP × PP × replicas × replica
scheduler variant × global scheduler), binary-search the highest Poisson
QPS at which every SLO holds (:mod:`vidur.search.maxqps`, probes in
:mod:`vidur.search.probe`), price it (:mod:`vidur.search.cost`), rank by QPS
per dollar, draw the Pareto frontier of cost against latency, and show
evidence for the winner. Runs in-process, on a local process pool or on Ray
(:mod:`vidur.search.executors`) and resumes from ``results.jsonl``
(:mod:`vidur.search.store`).

Python API::

    from vidur.search import load_search_spec, run_search
    spec = load_search_spec("scenarios/search-small.yaml")
    outcome = run_search(spec, "runs/search-small", jobs=2)
    outcome.best["config"], outcome.best["max_qps"], outcome.evidence["confirmed"]
"""

from vidur.search.cost import pick_best
from vidur.search.driver import SearchOutcome, evidence_for, run_search
from vidur.search.spec import (
    ConfigPoint,
    SearchOptions,
    SearchSpec,
    SLOTarget,
    load_search_spec,
    spec_from_dict,
)

__all__ = [
    "ConfigPoint",
    "SLOTarget",
    "SearchOptions",
    "SearchOutcome",
    "SearchSpec",
    "evidence_for",
    "load_search_spec",
    "pick_best",
    "run_search",
    "spec_from_dict",
]
