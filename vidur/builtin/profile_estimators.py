"""Built-in ``profile`` runtime estimator (fitted to measured operator times), registered as a plugin."""

from __future__ import annotations

from vidur.hookspecs import hookimpl


@hookimpl
def vidur_register_runtime_estimators(register):
    """Register the ``profile`` estimator (:class:`vidur.estimate.profile_estimator.ProfileEstimator`)."""
    from vidur.estimate.profile_estimator import ProfileEstimator

    register(ProfileEstimator)
