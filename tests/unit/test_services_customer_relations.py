"""Customer relations: answers from its own fold of the stock events."""

from __future__ import annotations

from datetime import timedelta

from pipelines.services import customer_relations as cr
from pipelines.services import stock
from pipelines.services.state import MemoryState
from shopstream.events import QuestionAnswered
from support import service_samples as s


def stock_log() -> list:
    st = MemoryState()
    log = stock.handle(s.restock("r1", "SKU-00001", 5), st)
    log += stock.handle(s.order("o1", [("SKU-00001", 2, "1.00")]), st)
    return log


def test_answer_carries_the_folded_level_and_the_chain() -> None:
    st = MemoryState()
    for event in stock_log():
        assert cr.handle(event, st) == []
    q = s.question("q1", "SKU-00001", channel="mobile")
    [answer] = cr.handle(q, st)
    assert isinstance(answer, QuestionAnswered)
    assert answer.payload.available_qty == 3
    assert "3 units" in answer.payload.answer
    assert answer.causation_id == str(q.event_id)
    assert answer.correlation_id == "q1"
    assert answer.channel == "mobile"


def test_unknown_sku_is_out_of_stock() -> None:
    [answer] = cr.handle(s.question("q1", "SKU-04242"), MemoryState())
    assert answer.payload.available_qty == 0
    assert "out of stock" in answer.payload.answer


def test_duplicate_stock_event_does_not_move_the_level_back() -> None:
    st = MemoryState()
    log = stock_log()
    for event in [*log, log[0]]:  # the restock (level_after 5) delivered again at the end
        cr.handle(event, st)
    [answer] = cr.handle(s.question("q1", "SKU-00001"), st)
    assert answer.payload.available_qty == 3


def test_duplicate_question_is_answered_once_within_the_ttl() -> None:
    st = MemoryState()
    q = s.question("q1", "SKU-00001")
    assert len(cr.handle(q, st)) == 1
    assert cr.handle(q, st) == []
    st.now_ms += int((cr.DEDUPE_TTL + timedelta(seconds=1)).total_seconds() * 1000)
    assert len(cr.handle(q, st)) == 1  # long forgotten: a new question after all
