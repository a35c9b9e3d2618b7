"""Calibrating the estimator against real serving runs: replay, fit, calibration files."""
