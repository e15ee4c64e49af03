"""What flows in and out of the analytics engines: input readers and output records.

The typed input topics carry events the router validated against the contracts
(:mod:`shopstream.events`), so the hot path reads the few fields it needs from the
deserialized JSON instead of re-validating every event with pydantic (about ten
times the cost of the aggregation itself). A record that lacks a field the engine
reads is not guessed at: it is kept on the late-events topic as ``unreadable``.

Money is aggregated in integer cents so sums are exact and do not depend on the
order events arrive in; outputs carry euros as ``cents / 100``.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipelines.deadletter import Source

OutputRole = Literal[
    "late",
    "digest",
    "sales_by_channel",
    "sales_by_store",
    "top_skus",
    "returns",
    "demand",
    "alert",
]
"""Where an engine output goes; the app maps each role to a topic."""

InputKind = Literal["orders", "returns", "questions", "stock"]
INPUT_KINDS: tuple[InputKind, ...] = ("orders", "returns", "questions", "stock")


@dataclass(frozen=True, slots=True)
class Output:
    """One result of an engine: its role (which output), message key, value and event time.

    The app turns it into a record of the role's topic
    (:class:`pipelines.runtime.outputs.Emit`).
    """

    role: OutputRole
    key: str
    value: dict[str, Any]
    timestamp_ms: int


Coordinates = Source
"""Where an input record came from, for late-event records and error logs: the same
``topic[partition]@offset`` the router and services put in dead letters and logs."""


class UnreadableEvent(ValueError):
    """An input record lacks a field the analytics reads (never raised for valid events)."""


_MINUTE_CACHE: dict[str, int] = {}
_MINUTE_CACHE_MAX = 200_000


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO-8601 timestamp with a zone.

    The canonical event format (``2024-06-01T12:34:56.789Z``, see
    :func:`shopstream.events.format_timestamp`) takes a fast path that caches the
    epoch of each minute; anything else goes through :meth:`datetime.fromisoformat`.
    """
    if len(text) == 24 and text[23] == "Z" and text[19] == "." and text[10] == "T":
        prefix = text[:16]
        base = _MINUTE_CACHE.get(prefix)
        if base is None:
            try:
                base = (
                    calendar.timegm(
                        (
                            int(text[0:4]),
                            int(text[5:7]),
                            int(text[8:10]),
                            int(text[11:13]),
                            int(text[14:16]),
                            0,
                            0,
                            0,
                            0,
                        )
                    )
                    * 1000
                )
            except ValueError as exc:
                raise UnreadableEvent(f"bad occurred_at {text!r}") from exc
            if len(_MINUTE_CACHE) >= _MINUTE_CACHE_MAX:
                _MINUTE_CACHE.clear()
            _MINUTE_CACHE[prefix] = base
        try:
            return base + int(text[17:19]) * 1000 + int(text[20:23])
        except ValueError as exc:
            raise UnreadableEvent(f"bad occurred_at {text!r}") from exc
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise UnreadableEvent(f"bad occurred_at {text!r}") from exc
    if moment.tzinfo is None:
        raise UnreadableEvent(f"occurred_at {text!r} has no time zone")
    return int(moment.timestamp() * 1000)


def format_time_ms(ms: int) -> str:
    """``ms`` since the epoch as canonical event time text (UTC, milliseconds, ``Z``)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_cents(amount: float | int | str) -> int:
    """Euros (a JSON number with at most two decimals) as integer cents."""
    # round(), not int(): 12.99 * 100 is 1298.9999999999998 in binary floating point.
    return round(float(amount) * 100)


def euros(cents: int) -> float:
    return cents / 100
