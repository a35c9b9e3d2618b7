"""Fitting measurements: interpolation curves of a profile, hold-out accuracy, collective
(network) fits and the roofline's calibration on a profile. numpy only at import time."""
