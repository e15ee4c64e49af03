"""The whole pipeline under faults (every lane): every process SIGKILLed at random moments
of a run with invalid, duplicate and late events, restarted each time - and on the Apache
Kafka lane the broker SIGKILLed mid-run and started again on its log directory. At the
end the read models equal a ground truth computed from what the channels sent.

The simulated shop (``run_produce``, a fixed seed) sends its opening stock, then paced
traffic with faults mixed in, into the ingress topics of a namespace of its own. The
router, the four services, analytics and the sink run as processes (``shopstream run NAME
--namespace S``). Each is SIGKILLed :attr:`Profile.kills_per_app` times at random moments
of the time the first :attr:`Profile.events` records take, while it works, and started
again at once; the traffic goes on until every new life works and at least that many
records were sent. On the Kafka lane the broker (a durable Apache Kafka of this module) is
then SIGKILLed for :attr:`Profile.outage_s` while traffic goes on. Once the read models
hold every order, decision, restock and answer and are quiet, every app is stopped with
SIGTERM and the read models are held to :mod:`support.truth` (``json`` + ``Decimal`` over
the ingress bytes).

* Loss and wrong values (every order once with its exact total, every malformed record a
  dead letter of its kind, every order decided, every reservation invoiced with
  net + tax = total, refunds, releases, notifications) must not happen on any lane: the
  services are idempotent on the causing event and the sink keeps its offsets with its
  rows.
* Doubles (a read-model row twice, a stock log that does not add up, an analytics window
  or a minute counted twice) are exactly-once: none on Apache Kafka; on the embedded
  broker records of aborted transactions reach ``read_committed`` readers
  (docs/testing.md), a known gap asserted as a strict xfail.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producers.app import ProduceOptions, record_streams
from producers.faults import FaultConfig
from producers.record import INGRESS_CHANNELS
from readmodels.queries import NoReadModels, ReadModels
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess
from shopstream.settings import Settings, load_settings
from shopstream.topics import ALL_TOPICS, INGRESS_BY_CHANNEL, Namespace
from support.fault_suite import Profile, report
from support.fleet import (
    Fleet,
    Kill,
    ProducerThread,
    broker_report,
    kill_broker,
    read_all,
    whereabouts,
)
from support.truth import Lake, Truth, Verdict, compare, tags_of

pytestmark = pytest.mark.timeout(2400)

SEED = 14
EMBEDDED_ABORTED_RECORDS_GAP = (
    "Tansu hands records of aborted transactions to read_committed readers: what a killed "
    "app had written in its open transaction is read next to what its restart writes again"
)
EVENT_TABLES = (
    "orders", "order_lines", "returns", "stock_questions", "stock_movements",
    "stock_rejections", "invoices", "refunds", "notifications", "stock_answers",
    "dead_letters", "alerts",
)  # fmt: skip
"""Read models fed by event-driven apps (analytics closes windows on the clock, forever)."""


def shop_morning() -> int:
    """08:00 UTC two days ago: a trading day's start, within topic retention (7 days), and
    far enough back that the fast-forwarded traffic (hours of shop time) never runs ahead
    of the clock, which Apache Kafka refuses past an hour."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today - timedelta(days=2) + timedelta(hours=8)).timestamp() * 1000)


def produce_options(profile: Profile, namespace: Namespace) -> ProduceOptions:
    return ProduceOptions(
        start_ms=shop_morning(),
        seed=SEED,
        faults=FaultConfig(
            invalid_ratio=profile.invalid_ratio,
            duplicate_ratio=profile.duplicate_ratio,
            late_ratio=profile.late_ratio,
        ),
        rate=profile.rate,
        count=None,  # until the faults are done and at least profile.events were sent
        topics={c: namespace.topic(INGRESS_BY_CHANNEL[c]).name for c in INGRESS_CHANNELS},
    )


def truth_of(
    settings: Settings, namespace: Namespace, options: ProduceOptions, traffic: int
) -> Truth:
    """The truth of what is on the ingress topics, with the injector's tags for it (the
    same seeded stream again - the opening stock and ``traffic`` records - checked record
    for record against the broker's).

    Every record made must be there. A record may be there twice: when the broker is
    SIGKILLed, the producer sends again what it had in flight, and the idempotent
    producer does not always keep the broker from writing it twice (seen in CI on the
    Kafka lane: 2 extra of 38,378 records). Such a copy is byte for byte a record made, as a
    channel's resend is: the router drops it by its event id, and the truth, read from the
    ingress topics, counts it among the duplicates. A record never made fails."""
    opening, stream = record_streams(options)
    made = [*opening, *itertools.islice(stream, traffic)]
    ingress = read_all(settings, [namespace.topic(s).name for s in INGRESS_BY_CHANNEL.values()])
    channel_of = {namespace.topic(s).name: c for c, s in INGRESS_BY_CHANNEL.items()}
    on_broker = Counter((channel_of[r.topic], r.value) for r in ingress)
    sent = Counter((r.channel, r.value) for r in made)
    missing = Counter(channel for channel, _ in (sent - on_broker).elements())
    extra = on_broker - sent
    foreign = sum(n for record, n in extra.items() if record not in sent)
    assert not missing and not foreign, (
        f"ingress holds {sum(on_broker.values())} records, the producer made {len(made)}: "
        f"{dict(missing)} missing, {foreign} never made"
    )
    if extra:
        print(f"\ningress: {extra.total()} records sent twice by the producer's retries "
              "across the broker's kill (the router drops them)")  # fmt: skip
    return Truth.of(ingress, tags_of(made), namespace)


def wait_until_complete(
    rm: ReadModels, truth: Truth, timeout: float, since_t: float, quiet: float = 5.0
) -> tuple[float, bool]:
    """Wait until the read models hold every order, decision, restock and answer of
    ``truth`` and then stopped changing for ``quiet`` seconds (invoices, refunds and
    notifications follow the decisions); return (seconds from ``since_t`` to their last
    change, whether they got there)."""
    want = {
        "orders": len(truth.orders),
        "decisions": len(truth.orders),
        "restocks": len(truth.restocks),
        "answers": len(truth.questions),
    }
    began = time.monotonic()
    last: dict[str, int] | None = None
    since = began
    while time.monotonic() - began < timeout:
        try:
            counts = {k: v for k, v in Lake.counts(rm).items() if k in EVENT_TABLES}
            done = all(n >= want[k] for k, n in Lake.progress(rm).items())
        except NoReadModels:
            counts, done = {}, False
        if counts != last:
            last, since = counts, time.monotonic()
        elif done and time.monotonic() - since >= quiet:
            return since - since_t, True
        time.sleep(0.5)
    return time.monotonic() - since_t, False


def run_with_kills(
    fleet: Fleet, producer: ProducerThread, profile: Profile, rng: random.Random
) -> None:
    """Kill every app of ``fleet`` ``profile.kills_per_app`` times at random moments of
    the time ``producer`` takes for ``profile.events`` records; each kill waits until the
    app's last life works (has consumed records); then wait until every life does."""
    span = profile.events / profile.rate
    began = time.monotonic()
    plan = sorted(
        (began + rng.uniform(1.0, max(span - 1.0, 2.0)), name)
        for name in fleet.apps
        for _ in range(profile.kills_per_app)
    )
    deadline = began + span + 600
    while plan or not all(k.recovered_after is not None for k in fleet.kills):
        fleet.check()
        assert not fleet.exits, f"an app exited by itself: {fleet.exits}\n{fleet.tails()}"
        assert producer.alive, f"the producer stopped: {producer.error}"
        for at, name in [(at, name) for at, name in plan if at <= time.monotonic()]:
            if fleet.recovered(name) and fleet.working(name):
                fleet.kill(name)
                plan.remove((at, name))
        waiting = {n for _, n in plan} | {k.app for k in fleet.kills if k.recovered_after is None}
        assert time.monotonic() < deadline, f"still waiting for {waiting}\n{fleet.tails()}"
        time.sleep(0.1)


@dataclass
class Outage:
    """The broker SIGKILLed and started again on its log directory."""

    down_s: float
    """From the SIGKILL until the restarted broker answered metadata."""
    start_s: float
    """How long the restart itself took."""
    before: dict[str, int]
    """Read-model rows when the broker was killed."""
    lowest: dict[str, int]
    """The fewest rows seen per read model while it was down."""
    reads: int
    """Queries the read models answered meanwhile."""
    back: dict[str, float] = field(default_factory=dict)
    """Per app: seconds from the broker answering again until it consumed records again."""


def kill_the_broker(broker: BrokerProcess, fleet: Fleet, rm: ReadModels, down: float) -> Outage:
    """SIGKILL ``broker`` while traffic flows, query the read models while it is gone,
    start it again after ``down`` seconds, and time each app until it works again."""
    before = Lake.counts(rm)
    kill_broker(broker)
    killed_at = time.monotonic()
    lowest, reads = dict(before), 0
    while time.monotonic() - killed_at < down:
        fleet.check()
        assert not fleet.exits, f"an app exited during the outage: {fleet.exits}"
        counts = Lake.counts(rm)
        lowest = {k: min(n, counts.get(k, 0)) for k, n in lowest.items()}
        reads += 1
        time.sleep(0.5)
    started = time.monotonic()
    broker.start()
    back_at = time.monotonic()
    consumed = {n: s.consumed for n in fleet.apps if (s := fleet.status(n)) is not None}
    outage = Outage(back_at - killed_at, back_at - started, before, lowest, reads)
    deadline = back_at + 300
    while len(outage.back) < len(fleet.apps):
        fleet.check()
        assert not fleet.exits, f"an app exited after the outage: {fleet.exits}"
        for name in set(fleet.apps) - set(outage.back):
            status = fleet.status(name)
            if status is not None and status.consumed > consumed.get(name, 0):
                outage.back[name] = time.monotonic() - back_at
        waiting = sorted(set(fleet.apps) - set(outage.back))
        assert time.monotonic() < deadline, f"not working after the outage: {waiting}\n" + (
            fleet.tails(waiting) + "\n" + broker_report(broker)
        )
        time.sleep(0.25)
    return outage


@dataclass
class FaultRun:
    lane: str
    profile: Profile
    truth: Truth
    verdict: Verdict
    kills: list[Kill]
    outage: Outage | None
    exits: list[tuple[str, int]]
    codes: dict[str, int]
    logs: dict[str, str]
    sent: int
    caught_up_s: float
    complete: bool
    seconds: float
    whereabouts: dict[str, list[str]] = field(default_factory=dict)
    """Where each id the read models miss is on the broker (:func:`whereabouts`)."""


@pytest.fixture(scope="module")
def run(
    pipeline_broker: BrokerProcess,
    tmp_path_factory: pytest.TempPathFactory,
    faults_profile: Profile,
) -> Iterator[FaultRun]:
    began = time.monotonic()
    broker, durable = pipeline_broker, pipeline_broker.kind == "kafka"
    tmp: Path = tmp_path_factory.mktemp("pipeline")
    settings = load_settings(broker_address=broker.address, data_dir=tmp / "data")
    namespace = Namespace(uuid.uuid4().hex[:8])
    create_topics(settings, namespace.topics(ALL_TOPICS))
    options = produce_options(faults_profile, namespace)
    enough = sum(1 for _ in record_streams(options)[0]) + faults_profile.events
    fleet = Fleet(settings, namespace, tmp)
    fleet.start()
    rm = ReadModels(settings)
    producer = ProducerThread(settings, options, namespace.app("producer"))
    outage = None
    try:
        fleet.wait_started(timeout=300)
        producer.start()
        run_with_kills(fleet, producer, faults_profile, random.Random(SEED))
        if durable:
            outage = kill_the_broker(broker, fleet, rm, faults_profile.outage_s)
        # Bounded: a producer retries a broker that is gone for ever.
        deadline = time.monotonic() + enough / faults_profile.rate + 300
        while producer.acked() < enough:
            assert producer.alive, f"the producer stopped: {producer.error}"
            assert broker.alive and time.monotonic() < deadline, (
                f"{producer.acked()} of {enough} records acknowledged\n{broker_report(broker)}"
            )
            time.sleep(0.2)
        stats = producer.finish()
        sent_at = time.monotonic()
        assert stats.failed == 0 and stats.unflushed == 0, (
            f"{stats.failed} failed, {stats.unflushed} undelivered: {stats.last_error}"
        )
        truth = truth_of(settings, namespace, options, stats.sent - stats.opening)
        caught_up, complete = wait_until_complete(rm, truth, 600, sent_at)
        fleet.check()
    finally:
        if producer.alive:
            producer.finish()
        codes = fleet.stop()
        rm.close()
    verdict = compare(truth, Lake(ReadModels(settings)), namespace)
    lost = [i for c in verdict.checks.values() for i in c.missing if "[" not in i]
    found = whereabouts(settings, [t.name for t in namespace.topics(ALL_TOPICS)], lost[:20])
    yield FaultRun(
        broker.kind, faults_profile, truth, verdict, fleet.kills, outage, fleet.exits,
        codes, {name: fleet.log(name) for name in fleet.apps}, stats.sent, caught_up,
        complete, time.monotonic() - began, found,
    )  # fmt: skip


def _spread(values: list[float]) -> str:
    values = sorted(values)
    return f"{values[0]:.0f}-{values[-1]:.0f}s (median {values[len(values) // 2]:.0f}s)"


def _figures(run: FaultRun) -> str:
    per_app = Counter(k.app for k in run.kills)
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(run.truth.faults.items()))
    v = run.verdict
    return (
        f"{run.lane} lane, {run.profile.name}: {run.sent} records sent ({run.truth.valid} "
        f"valid first-time events, {len(run.truth.orders)} orders); faults: {faults}; "
        f"{len(run.kills)} kills ({', '.join(f'{a} {n}' for a, n in sorted(per_app.items()))}),"
        f" new life up after {_spread([k.up_after or 0 for k in run.kills])}, working after "
        f"{_spread([k.recovered_after or 0 for k in run.kills])}; read models complete "
        f"{run.caught_up_s:.0f}s after the last record sent; lost {v.lost}, doubled "
        f"{v.doubled} ({v.extra_rows} extra rows), stock log {len(v.stock_log)}, windows "
        f"{len(v.windows)}, sales_minute {len(v.minutes)} off; {run.seconds:.0f}s in all"
    )


def test_every_app_killed_came_back_and_none_crashed(run: FaultRun) -> None:
    report("pipeline", _figures(run))
    assert Counter(k.app for k in run.kills) == dict.fromkeys(run.logs, run.profile.kills_per_app)
    assert all(k.recovered_after is not None for k in run.kills)
    assert run.exits == [], run.exits
    assert run.codes == dict.fromkeys(run.logs, 0), run.codes
    for name, log in run.logs.items():
        assert "Traceback" not in log, f"{name}:\n{log[-3000:]}"
        assert "failed runs in a row" not in log, f"{name}:\n{log[-3000:]}"


def test_the_apps_ride_out_a_broker_killed_and_restarted(run: FaultRun) -> None:
    if run.outage is None:
        pytest.skip("the embedded broker keeps data in memory only: a restart loses everything")
    outage = run.outage
    report(
        "broker kill",
        f"{run.lane} lane: broker SIGKILLed, back after {outage.down_s:.0f}s (restart "
        f"{outage.start_s:.0f}s); read models answered {outage.reads} queries meanwhile, "
        f"rows kept ({sum(outage.lowest.values())} of {sum(outage.before.values())} at "
        f"the kill, never fewer); apps working again after "
        + ", ".join(f"{a} {s:.0f}s" for a, s in sorted(outage.back.items())),
    )
    assert outage.lowest == outage.before, "read models lost rows while the broker was down"
    for name, log in run.logs.items():
        # One line when the broker went, one when it came back (the probe may see a short
        # second blip while the broker starts; never a line per retry).
        gone, back = log.count("unreachable ("), log.count(" is back after ")
        assert 1 <= gone <= 2 and gone == back, f"{name}:\n{log[-3000:]}"
        assert "restarting in" not in log and "run failed" not in log, f"{name}:\n{log[-3000:]}"


def test_read_models_lose_nothing_and_hold_the_right_values(run: FaultRun) -> None:
    problems = run.verdict.at_least_once()
    assert run.complete, "the read models never caught up:\n" + "\n".join(problems)
    assert problems == [], "\n".join(problems) + "\non the broker:\n" + "\n".join(
        f"{i}: {', '.join(places) or 'nowhere'}" for i, places in run.whereabouts.items()
    )
    # The run injected every kind of fault it was to.
    assert set(run.truth.faults) >= {"duplicate", "late", "truncated_json", "oversized"}
    assert run.truth.malformed and run.truth.duplicates


@pytest.mark.known_gap("embedded", EMBEDDED_ABORTED_RECORDS_GAP)
def test_read_models_hold_each_event_exactly_once(
    run: FaultRun, claim: Callable[[bool, str], None]
) -> None:
    problems = run.verdict.exactly_once()
    claim(problems == [], "\n".join(problems))
