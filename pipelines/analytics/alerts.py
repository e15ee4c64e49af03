"""Alert events the analytics raise, as :class:`shopstream.events.Alert` contracts.

An alert is stamped with the event time at which its rule became true (the end
of the window that tripped it), not with the wall clock, and its ``event_id`` is
derived from (kind, subject, that time): re-processing the same input raises the
same alert with the same id, so consumers can drop a repeat.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from shopstream.events import Alert, AlertPayload, to_json_dict

AlertKind = Literal["channel_silent", "return_rate_spike", "questions_on_out_of_stock"]
Severity = Literal["info", "warning", "critical"]

_ALERT_NAMESPACE = uuid.UUID("0b6f5f0e-5d0c-4a57-9a43-3f1f1d7a2c55")
GLOBAL_STORE = "all"
"""``store_id`` of alerts that concern the whole shop (a channel, a category)."""


def alert_event(
    kind: AlertKind,
    subject: str,
    at_ms: int,
    message: str,
    details: dict[str, str | int | float],
    *,
    store_id: str = GLOBAL_STORE,
    severity: Severity = "warning",
) -> dict[str, Any]:
    """The JSON value of an ``Alert`` event (validated against the contract)."""
    alert_id = uuid.uuid5(_ALERT_NAMESPACE, f"{kind}|{subject}|{at_ms}")
    event = Alert(
        event_id=alert_id,
        occurred_at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
        channel="system",
        store_id=store_id,
        correlation_id=f"{kind}:{subject}"[:64],
        payload=AlertPayload(
            alert_id=str(alert_id),
            kind=kind,
            severity=severity,
            subject=subject[:64],
            message=message[:1000],
            details=details,
        ),
    )
    return to_json_dict(event)
