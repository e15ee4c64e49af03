"""Customer relations: answers stock questions from the stock event log. Pure rules.

The service keeps its own view of the levels per store, folded from ``stock.events``
with :func:`pipelines.services.stock.evolve` (the same fold the stock service uses), and
answers each ``StockQuestionAsked`` with the level as of the question.

State keys, per store:

* ``level:<sku>`` - the folded level.
* ``seen:<event_id>`` - a stock event already folded (TTL :data:`DEDUPE_TTL`): a
  duplicate delivery must not move the level back to an older ``level_after``.
* ``question:<question_id>`` - already answered (TTL :data:`DEDUPE_TTL`).
"""

from __future__ import annotations

from datetime import timedelta

from pipelines.services import stock
from pipelines.services.state import KeyValueState, first_time
from shopstream.events import (
    Envelope,
    QuestionAnswered,
    QuestionAnsweredPayload,
    StockQuestionAsked,
    derive,
)

DEDUPE_TTL = timedelta(days=7)
"""How long (event time) a folded stock event or an answered question is remembered."""

INPUT_TYPES = stock.STOCK_EVENT_TYPES | {"StockQuestionAsked"}


def handle(event: Envelope, state: KeyValueState) -> list[Envelope]:
    """Fold a stock event, or answer a question; idempotent on the causing event."""
    if isinstance(event, StockQuestionAsked):
        return _answer(event, state)
    is_stock_event = event.event_type in stock.STOCK_EVENT_TYPES
    if is_stock_event and first_time(state, f"seen:{event.event_id}", DEDUPE_TTL):
        stock.evolve(state, event)
    return []


def answer_text(sku: str, store_id: str, available: int) -> str:
    if available == 0:
        return f"{sku} is out of stock at {store_id} right now."
    unit = "unit" if available == 1 else "units"
    return f"{sku}: {available} {unit} available at {store_id}."


def _answer(question: StockQuestionAsked, state: KeyValueState) -> list[Envelope]:
    p = question.payload
    if not first_time(state, f"question:{p.question_id}", DEDUPE_TTL):
        return []
    available = max(int(state.get(stock.level_key(p.sku), 0)), 0)
    return [
        derive(
            question,
            QuestionAnswered,
            QuestionAnsweredPayload(
                question_id=p.question_id,
                customer_id=p.customer_id,
                sku=p.sku,
                store_id=p.store_id,
                available_qty=available,
                answer=answer_text(p.sku, p.store_id, available),
            ),
        )
    ]
