"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class VidurError(Exception):
    """A problem with the user's input (scenario, trace, plugin name, ...).

    The message must say what is wrong and how to fix it, on one line.
    """


class PluginError(VidurError):
    """A plugin misbehaved or two plugins claim the same name."""
