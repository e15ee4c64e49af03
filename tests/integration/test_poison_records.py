"""No record stops the router (every lane): huge and undecodable records written by an
independent client end in dead letters - cut to fit when they must be - between good
events that are routed as usual, and the router process stays up with counters that add
up.

The records come from kafka-python (its own protocol implementation, as a third-party
channel would send them) at about 0.9x and 1.0x the client's record limit and just
under the broker's, plus bytes that are not UTF-8.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer

from pipelines import deadletter
from pipelines.router import router_topics
from shopstream.admin import create_topics
from shopstream.events import encode, headers_for, utc_ms
from shopstream.kafka import BROKER_MAX_MESSAGE_BYTES, CLIENT_MAX_MESSAGE_BYTES
from shopstream.settings import Settings
from shopstream.status import read_statuses
from shopstream.topics import DEAD_LETTERS, INGRESS_WEB, ROUTES, Namespace
from support import service_samples as s
from support.processes import AppProcess, TopicReader

BAD_SIZES = (
    int(0.9 * CLIENT_MAX_MESSAGE_BYTES),
    CLIENT_MAX_MESSAGE_BYTES,
    BROKER_MAX_MESSAGE_BYTES - 600,  # just under the broker's limit, framing included
)
NOT_UTF8 = b'{"event_type": "OrderPlaced", "note": "\xff\xfe\xfa"}'


def huge_order(size: int) -> bytes:
    """A JSON order of exactly ``size`` bytes (valid JSON, far over the event limit)."""
    head, tail = b'{"event_type":"OrderPlaced","padding":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_huge_and_undecodable_records_end_in_dead_letters_and_the_router_carries_on(
    settings: Settings, namespace: Namespace, tmp_path: Path
) -> None:
    create_topics(settings, namespace.topics(router_topics()))
    ingress = namespace.topic(INGRESS_WEB).name
    now = utc_ms(datetime.now(UTC))
    where = {"channel": "web", "store_id": "store-01", "origin": now}
    good = [s.order(f"o{i}", [("SKU-00001", 1, "2.00")], t=i, **where) for i in range(8)]
    bad = [huge_order(size) for size in BAD_SIZES] + [NOT_UTF8]
    sender = KafkaProducer(
        bootstrap_servers=settings.broker_address, max_request_size=2 * BROKER_MAX_MESSAGE_BYTES
    )
    # Good and bad interleaved on one partition (one key), in this order.
    sequence = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], *good[4:]]
    for item in sequence:
        if isinstance(item, bytes):
            sender.send(ingress, item, key=b"store-01").get(timeout=60)
        else:
            sender.send(ingress, encode(item), key=b"store-01", headers=headers_for(item)).get(
                timeout=60
            )
    sender.close()

    router = AppProcess("router", namespace, settings, tmp_path).start()
    orders = namespace.topic(ROUTES["OrderPlaced"]).name
    dlq = namespace.topic(DEAD_LETTERS).name
    out = TopicReader(settings, [orders, dlq])
    try:
        done = out.wait_for(
            lambda r: len(r.records[orders]) >= len(good) and len(r.records[dlq]) >= len(bad),
            timeout=120,
            settle=2.0,
        )
        time.sleep(2.5)  # one more status publication after the last record
        assert router.running, router.log_tail()
    finally:
        code = router.stop()
        out.close()
    assert done, router.log_tail(40)
    assert code == 0, router.log_tail(40)

    routed = [r.value for r in out.records[orders]]
    assert routed == [encode(e) for e in good]
    parsed = [
        (deadletter.DeadLetter.from_record(r.key, r.value, r.headers, r.timestamp), dict(r.headers))
        for r in out.records[dlq]
    ]
    letters = sorted(parsed, key=lambda pair: pair[0].source.offset)
    assert [letter.source.topic for letter, _ in letters] == [ingress] * len(bad)
    assert {letter.app for letter, _ in letters} == {namespace.app("router")}
    (whole, _), *cut, (garbled, _) = letters
    # 0.9x the client's limit fits with its headers: kept whole.
    assert (whole.failure.kind, whole.value, whole.truncated) == ("oversized", bad[0], False)
    # 1.0x and just under the broker's limit do not: cut to fit, with what it takes to find
    # and check the original.
    for (letter, headers), original in zip(cut, bad[1:3], strict=True):
        assert letter.failure.kind == "oversized" and letter.truncated
        assert letter.original_size == len(original)
        assert headers[deadletter.ORIGINAL_SHA256] == hashlib.sha256(original).hexdigest().encode()
        assert letter.value and original.startswith(letter.value)
        assert deadletter.record_size(letter.key, letter.value, list(headers.items())) <= (
            CLIENT_MAX_MESSAGE_BYTES
        )
    assert (garbled.failure.kind, garbled.value) == ("bad_encoding", NOT_UTF8)

    status = read_statuses(Path(settings.data_dir) / "run")[namespace.app("router")]
    assert status.consumed == len(sequence), status
    assert status.produced == len(sequence)  # every record: routed or dead-lettered, once
    assert status.dead_lettered == len(bad) and status.errors == 0, status
    assert "Traceback" not in router.log_tail(200)
