"""Testing kit for vidur and its plugins.

- :mod:`vidur.testing.pytest_plugin`: fixtures (loaded by pytest automatically)
- :mod:`vidur.testing.harness`: ReplicaHarness and ClusterHarness
- :mod:`vidur.testing.strategies`: Hypothesis strategies (requests, traces, workloads)
- :mod:`vidur.testing.conformance`: property suites every scheduler plugin should pass
- :mod:`vidur.testing.fakes`: a linear runtime estimator, a tiny model and device
- :mod:`vidur.testing.helpers`: tiny scenarios, in-process plugin wrappers, fake distributions

Nothing here is imported by ``import vidur``; importing this package is free.
"""
