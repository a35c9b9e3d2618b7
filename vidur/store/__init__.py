"""On-disk formats that producers write and consumers read: :mod:`vidur.store.profiles` is the
profile format (written by the profiler and the Vidur importer, read by fitting, calibration and
the estimators)."""
