"""attrs validators that raise one-line :class:`VidurError` messages.

Each factory takes the config prefix (``"arrival"`` or ``"lengths"``) so a
message names the key as a user writes it: ``arrival.qps must be > 0, got 0``.
"""

from __future__ import annotations

import math
from typing import Any

from vidur.errors import VidurError

ARRIVAL = "arrival"
LENGTHS = "lengths"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def positive(prefix: str):
    """A finite number > 0."""

    def check(_inst, attr, value):
        if not _is_number(value) or value <= 0:
            raise VidurError(f"{prefix}.{attr.name} must be a number > 0, got {value!r}")

    return check


def optional_positive(prefix: str):
    """None, or a finite number > 0."""
    inner = positive(prefix)

    def check(inst, attr, value):
        if value is not None:
            inner(inst, attr, value)

    return check


def non_negative(prefix: str):
    """A finite number >= 0."""

    def check(_inst, attr, value):
        if not _is_number(value) or value < 0:
            raise VidurError(f"{prefix}.{attr.name} must be a number >= 0, got {value!r}")

    return check


def int_at_least(prefix: str, low: int):
    """An integer >= ``low``."""

    def check(_inst, attr, value):
        if not _is_int(value) or value < low:
            raise VidurError(f"{prefix}.{attr.name} must be an integer >= {low}, got {value!r}")

    return check


def optional_int_at_least(prefix: str, low: int):
    """None, or an integer >= ``low``."""
    inner = int_at_least(prefix, low)

    def check(inst, attr, value):
        if value is not None:
            inner(inst, attr, value)

    return check


def one_of(prefix: str, choices: tuple[str, ...]):
    """One of a few strings."""

    def check(_inst, attr, value):
        if value not in choices:
            raise VidurError(f"{prefix}.{attr.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


def is_bool(prefix: str):
    def check(_inst, attr, value):
        if not isinstance(value, bool):
            raise VidurError(f"{prefix}.{attr.name} must be true or false, got {value!r}")

    return check


def is_str(prefix: str):
    def check(_inst, attr, value):
        if not isinstance(value, str):
            raise VidurError(f"{prefix}.{attr.name} must be a string (a file path), got {value!r}")

    return check


def check_count(num_requests: Any) -> int:
    """``num_requests`` as an int >= 0, or a VidurError."""
    if not _is_int(num_requests) or num_requests < 0:
        raise VidurError(f"num_requests must be an integer >= 0, got {num_requests!r}")
    return int(num_requests)


def check_duration(duration: Any) -> float:
    if not _is_number(duration) or duration <= 0:
        raise VidurError(f"duration must be a number of seconds > 0, got {duration!r}")
    return float(duration)


def exactly_one(num_requests: Any, duration: Any) -> None:
    """Exactly one of the two must be given."""
    if (num_requests is None) == (duration is None):
        raise VidurError(
            "give exactly one of num_requests and duration "
            f"(got num_requests={num_requests!r}, duration={duration!r})"
        )
