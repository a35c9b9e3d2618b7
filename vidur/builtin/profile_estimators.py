"""Built-in ``profile`` runtime estimator (fitted to measured operator times), registered as a plugin."""

from __future__ import annotations

from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_runtime_estimators(register):
    """Register the ``profile`` estimator (:class:`vidur.estimate.profiled.ProfileEstimator`)."""
    from vidur.estimate.profiled import ProfileEstimator

    register(ProfileEstimator)
