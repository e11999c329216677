"""A movie's time between frames, from what its file says (ImageJ, OME-Zarr, RosettaSciIO axes).

The readers put ``metadata["frame_interval"] = (value, unit)`` on a 3-D image
whose first axis their format marks as time; :func:`frame_interval_seconds`
turns that into seconds, or None where the file says nothing usable. Nothing is
guessed: an unknown unit or a non-positive interval gives None.
"""

from __future__ import annotations

import math

__all__ = ["frame_interval_seconds", "seconds_per"]

_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "msec": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "microsecond": 1e-6,
    "microseconds": 1e-6,
    "ns": 1e-9,
    "nanosecond": 1e-9,
    "nanoseconds": 1e-9,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def seconds_per(unit) -> float | None:
    """Seconds in one ``unit`` of time (``"ms"``, ``"millisecond"``, ``"sec"``...), None for anything else.

    Examples
    --------
    >>> seconds_per("ms"), seconds_per("Second"), seconds_per("nm")
    (0.001, 1.0, None)
    """
    if not isinstance(unit, str):
        return None
    return _SECONDS.get(unit.strip().lower())


def frame_interval_seconds(metadata: dict) -> float | None:
    """Seconds between frames from an image's ``metadata["frame_interval"]``, or None.

    Examples
    --------
    >>> frame_interval_seconds({"frame_interval": (40.0, "millisecond")})
    0.04
    >>> frame_interval_seconds({"frame_interval": (0.0, "s")}) is None, frame_interval_seconds({}) is None
    (True, True)
    """
    given = metadata.get("frame_interval")
    if not given:
        return None
    value, unit = given
    factor = seconds_per(unit)
    try:
        seconds = float(value) * factor if factor is not None else math.nan
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
