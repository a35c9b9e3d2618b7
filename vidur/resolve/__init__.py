"""Resolution: from the names a scenario or command gives to the objects that price it.

- :mod:`vidur.resolve.device`: a device name or device file -> the device, its node, and where
  both came from (nothing registered process-wide);
- :mod:`vidur.resolve.estimator`: ``auto`` or a named estimator -> the estimator class and its
  configuration (``can_price`` offers, calibration files, engine mode);
- :mod:`vidur.resolve.provenance`: the one record of that decision that ``run``, ``search``,
  ``estimate`` and ``validate`` print and store;
- :mod:`vidur.resolve.price`: price one iteration with the resolved estimator (``vidur estimate``).

The resolver reaches estimators only through the plugin host; it imports none of the built-ins.
"""
