"""Profiler: measure a model's operators with PyTorch (GPU or CPU) into ``profiles/<device>/<model>/``.

Public API: :func:`vidur.profile.profiler.profile_model`; grids in
:mod:`vidur.profile.grids`; operators in :mod:`vidur.reference.layers`; timers in
:mod:`vidur.profile.timing`. Importing this package does not import torch.
"""

__all__ = ["profile_model"]


def profile_model(*args, **kwargs):
    """See :func:`vidur.profile.profiler.profile_model`."""
    from vidur.profile.profiler import profile_model as _impl

    return _impl(*args, **kwargs)
