"""``shopstream produce``: the channel simulators on the command line, and their ``up`` entry.

Registered through the ``shopstream.commands`` and ``shopstream.up`` entry points
(see :mod:`shopstream.plugins`); wrong flags or values end in one readable line
(``click.BadParameter`` or :class:`shopstream.errors.UserError`), never a traceback.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import click
from rich.console import Console

from producers.app import DEFAULT_TOPICS, ProduceOptions, run_produce
from producers.faults import MALFORMED_KINDS, FaultConfig, MalformedKind
from producers.live import summary_table
from producers.record import INGRESS_CHANNELS, IngressChannel, from_ms, to_ms
from shopstream.apps import AppSpec
from shopstream.settings import Settings, load_settings
from shopstream.topics import INGRESS_BY_CHANNEL

UP_RATE = 100
"""Mean records per second of the demo producer that ``shopstream up`` starts."""


class SeedParam(click.ParamType):
    name = "INTEGER|random"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        if str(value).strip() == "random":
            return secrets.randbelow(2**31)
        try:
            return int(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a seed - use an integer or random", param, ctx)


class ChannelsParam(click.ParamType):
    name = "CHANNEL[,CHANNEL...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, frozenset):
            return value
        names = [v.strip() for v in str(value).split(",") if v.strip()]
        if "all" in names:
            return frozenset(INGRESS_CHANNELS)
        unknown = [n for n in names if n not in INGRESS_CHANNELS]
        if unknown or not names:
            self.fail(
                f"{value!r} is not a channel - use {', '.join(INGRESS_CHANNELS)} or all "
                "(comma-separated for several)",
                param, ctx,
            )  # fmt: skip
        return frozenset(names)


class StartTimeParam(click.ParamType):
    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
            else:
                parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is not a time - use ISO 8601, e.g. 2025-03-03T08:00:00Z or 2025-03-03",
                param, ctx,
            )  # fmt: skip
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class DurationParam(click.ParamType):
    name = "DURATION"
    _UNITS: ClassVar[dict[str, float]] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(value))
        if not match or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a duration - use e.g. 90, 90s, 5m or 1.5h", param, ctx)
        return float(match.group(1)) * self._UNITS[match.group(2)]


class KindsParam(click.ParamType):
    name = "KIND[,KIND...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        names = [v.strip() for v in str(value).split(",") if v.strip()]
        if names == ["all"]:
            return MALFORMED_KINDS
        unknown = [n for n in names if n not in MALFORMED_KINDS]
        if unknown or not names:
            self.fail(f"unknown kind(s) {unknown} - use {', '.join(MALFORMED_KINDS)}", param, ctx)
        return tuple(names)


def _parse_topics(values: tuple[str, ...]) -> dict[IngressChannel, str]:
    topics = dict(DEFAULT_TOPICS)
    for item in values:
        channel, sep, name = item.partition("=")
        if not sep or channel not in INGRESS_CHANNELS or not name:
            raise click.BadParameter(
                f"{item!r} - use CHANNEL=TOPIC with CHANNEL one of {', '.join(INGRESS_CHANNELS)}",
                param_hint="'--topic'",
            )
        topics[channel] = name  # type: ignore[index]
    return topics


RATIO = click.FloatRange(0.0, 1.0)


@click.command("produce")
@click.option(
    "--channel",
    "channels",
    type=ChannelsParam(),
    default="all",
    show_default=True,
    help="Which channels to simulate: mobile, pos, web, warehouse or all.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.0),
    default=1000.0,
    show_default=True,
    help="Records per second (token bucket); 0 sends as fast as the broker takes them.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help="Stop after this many records (the opening stock load is extra).",
)
@click.option(
    "--duration", type=DurationParam(), help="Stop after this long, e.g. 90s, 5m, 2h (wall clock)."
)
@click.option(
    "--seed", type=SeedParam(), default="1", show_default=True,
    help="Same seed and flags, same events; random draws one (printed in the summary).",
)  # fmt: skip
@click.option(
    "--speedup",
    type=click.FloatRange(min=0.0, min_open=True),
    help="Event time runs at most N times faster than wall time (e.g. 1 = real time).",
)
@click.option(
    "--realtime",
    is_flag=True,
    help="Event time follows the wall clock, traffic scaled so the next hour averages --rate/s.",
)
@click.option(
    "--start-time",
    type=StartTimeParam(),
    help="Event time of the first event, ISO 8601 (UTC if no zone); default: now.",
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiplies the customer traffic per simulated second.",
)
@click.option(
    "--flash-sale",
    is_flag=True,
    help="Bursts: a 20-minute sale every 3 h of event time, online traffic x6.",
)
@click.option(
    "--invalid-ratio",
    type=RATIO,
    default=0.0,
    show_default=True,
    help="Malformed records added per valid event.",
)
@click.option(
    "--invalid-kinds",
    type=KindsParam(),
    default="all",
    show_default=True,
    help=f"Malformed kinds to draw from: {', '.join(MALFORMED_KINDS)}.",
)
@click.option(
    "--duplicate-ratio",
    type=RATIO,
    default=0.0,
    show_default=True,
    help="Share of valid events sent twice (same event_id).",
)
@click.option(
    "--late-ratio",
    type=RATIO,
    default=0.0,
    show_default=True,
    help="Share of valid events whose event time is 1-10 minutes in the past.",
)
@click.option(
    "--opening/--no-opening",
    default=True,
    show_default=True,
    help="Send the opening stock (one Restocked per SKU and store) first.",
)
@click.option(
    "--topic",
    "topic_overrides",
    multiple=True,
    metavar="CHANNEL=TOPIC",
    help="Send a channel to another topic (repeatable).",
)
@click.option(
    "--broker", metavar="HOST:PORT", help="Broker address (default: SHOPSTREAM_BROKER_ADDRESS)."
)
@click.option("--status-name", hidden=True, help="Publish counters as this process (up).")
def produce(
    channels: frozenset[IngressChannel],
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int,
    speedup: float | None,
    realtime: bool,
    start_time: datetime | None,
    scale: float,
    flash_sale: bool,
    invalid_ratio: float,
    invalid_kinds: tuple[MalformedKind, ...],
    duplicate_ratio: float,
    late_ratio: float,
    opening: bool,
    topic_overrides: tuple[str, ...],
    broker: str | None,
    status_name: str | None,
) -> None:
    """Simulate the shop's channels and stream their events to the ingress topics.

    Mobile app, point of sale and web send orders, returns and stock questions;
    the warehouse sends the opening stock, then replenishments. Runs until
    --count or --duration, or Ctrl-C / SIGTERM (which flush first).
    """
    settings: Settings = load_settings(broker_address=broker) if broker else load_settings()
    start_ms = to_ms(start_time or datetime.now(UTC))
    options = ProduceOptions(
        start_ms=start_ms,
        channels=channels,
        seed=seed,
        scale=scale,
        flash_sale=flash_sale,
        faults=FaultConfig(invalid_ratio, duplicate_ratio, late_ratio, kinds=invalid_kinds),
        opening=opening,
        rate=rate,
        speedup=speedup,
        realtime=realtime,
        count=count,
        duration=duration,
        topics=_parse_topics(topic_overrides),
    )
    if realtime and speedup:
        raise click.BadParameter("--realtime sets the speedup to 1; drop --speedup")
    stats = run_produce(settings, options, status_name=status_name)
    start_iso = from_ms(start_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    Console().print(summary_table(stats, seed=seed, start_iso=start_iso))
    if stats.failed or stats.unflushed:
        hint = f"check the broker at {settings.broker_address}"
        if "INVALID_TIMESTAMP" in (stats.last_error or ""):
            # Records carry their event time; brokers refuse times too far ahead of their
            # clock (Apache Kafka: an hour, log.message.timestamp.after.max.ms).
            earlier = datetime.now(UTC) - timedelta(hours=6)
            hint = (
                "the event times ran ahead of the broker's clock: an unpaced or sped-up run "
                f"should start in the past, e.g. --start-time {earlier:%Y-%m-%dT%H:00Z}"
            )
        click.echo(
            f"error: {stats.failed:,} records failed and {stats.unflushed:,} were not flushed "
            f"(last error: {stats.last_error}) - {hint}",
            err=True,
        )
        raise click.exceptions.Exit(1)


def _producer_app(name: str, channels: str, targets: frozenset[str]) -> AppSpec:
    selected = list(INGRESS_BY_CHANNEL) if channels == "all" else [channels]
    return AppSpec(
        name=name,
        kind="producer",
        description=f"Simulated shop traffic of {channels} channel(s), in real time",
        argv=(
            *("produce", "--channel", channels, "--rate", str(UP_RATE), "--realtime"),
            *("--seed", "random", "--status-name", name),
        ),
        writes=tuple(INGRESS_BY_CHANNEL[c].name for c in selected),
        # Last: the first events then find the router and services already joined.
        order=90,
        scalable=False,
        targets=targets,  # type: ignore[arg-type]
    )


# Registry entries (pyproject.toml, "shopstream.apps"). `up` runs one producer for every
# channel (one process on a laptop); compose runs one per channel, as separate systems
# would send. Both use random seeds, so a second start never resends the first's ids.
PRODUCER_APP = _producer_app("producer", "all", frozenset({"up"}))
CHANNEL_APPS = {
    channel: _producer_app(f"producer-{channel}", channel, frozenset({"compose"}))
    for channel in INGRESS_BY_CHANNEL
}
MOBILE_APP, POS_APP, WEB_APP, WAREHOUSE_APP = CHANNEL_APPS.values()
