"""Built-in runtime estimators, registered as a plugin."""

from vidur.estimate.roofline import RooflineEstimator
from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_runtime_estimators(register):
    """Register the analytical ``roofline`` estimator."""
    register(RooflineEstimator)
