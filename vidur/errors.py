"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class VidurError(Exception):
    """A problem with the user's input (scenario, trace, plugin name, ...).

    The message must say what is wrong and how to fix it, on one line.
    """


class PluginError(VidurError):
    """A plugin misbehaved or two plugins claim the same name."""


class PolicyOutputError(Exception):
    """A policy returned (or asked the engine for) something it cannot run:
    an empty batch, a route out of range, more tokens than a request has left.

    Not a :class:`VidurError`: the simulation turns it into a
    :class:`PluginError` naming the plugin and its distribution. ``kind`` is
    the registry kind of the offending policy (``"replica_scheduler"``,
    ``"global_scheduler"``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
