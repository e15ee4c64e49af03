"""``shopstream produce`` on the command line: flags, one-line errors, plugin wiring."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import pytest

from producers.app import realtime_scale
from producers.cli import CHANNEL_APPS, PRODUCER_APP, DurationParam, StartTimeParam, produce
from shopstream.apps import apps_for, load_commands
from shopstream.cli.main import main
from shopstream.shop.traffic import TrafficModel


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--rate", "-1"], "--rate"),
        (["--channel", "fax"], "not a channel"),
        (["--duration", "5 parsecs"], "not a duration"),
        (["--start-time", "tomorrowish"], "not a time"),
        (["--invalid-ratio", "2"], "--invalid-ratio"),
        (["--invalid-kinds", "truncated_json,bogus"], "unknown kind"),
        (["--count", "0"], "--count"),
        (["--speedup", "0"], "--speedup"),
        (["--topic", "pos"], "CHANNEL=TOPIC"),
        (["--broker", "nowhere"], "SHOPSTREAM_BROKER_ADDRESS"),
        (["--broker", "127.0.0.1:1", "--count", "1"], "no broker at 127.0.0.1:1"),
    ],
)
def test_wrong_input_is_one_readable_line(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["produce", *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_durations_and_start_times_parse() -> None:
    duration = DurationParam()
    assert duration.convert("90", None, None) == 90.0
    assert duration.convert("5m", None, None) == 300.0
    assert duration.convert("1.5h", None, None) == 5400.0
    start = StartTimeParam()
    utc = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
    assert start.convert("2025-03-03T08:00:00Z", None, None) == utc
    assert start.convert("2025-03-03T09:00:00+01:00", None, None) == utc
    assert start.convert("2025-03-03T08:00", None, None) == utc, "naive means UTC"
    assert start.convert("2025-03-03", None, None) == utc.replace(hour=0)


def test_produce_is_a_registered_command() -> None:
    assert isinstance(produce, click.Command)
    assert "produce" in {c.name for c in load_commands()}


def test_up_starts_one_realtime_producer_for_every_channel_after_the_services() -> None:
    producers = [a for a in apps_for("up") if a.kind == "producer"]
    assert producers == [PRODUCER_APP]
    # The command line parses: the demo command line is a valid one.
    ctx = produce.make_context("produce", list(PRODUCER_APP.command[1:]))
    assert ctx.params["channels"] == frozenset({"mobile", "pos", "web", "warehouse"})
    assert ctx.params["realtime"] and ctx.params["rate"] == 100
    # A fresh seed per start: a second `up` on a durable broker sends new ids.
    again = produce.make_context("produce", list(PRODUCER_APP.command[1:]))
    assert ctx.params["seed"] != again.params["seed"]


def test_compose_runs_one_producer_per_channel() -> None:
    compose = {a.name for a in apps_for("compose") if a.kind == "producer"}
    assert compose == {app.name for app in CHANNEL_APPS.values()}
    for channel, app in CHANNEL_APPS.items():
        ctx = produce.make_context("produce", list(app.command[1:]))
        assert ctx.params["channels"] == frozenset({channel})


def test_realtime_scale_makes_the_next_hour_average_the_rate() -> None:
    start = 1_764_590_400_000  # a Monday, 12:00 UTC
    scale = realtime_scale(start, 100.0)
    actions = sum(TrafficModel(start, scale).expected_actions(start, start + 3_600_000))
    assert actions / 3600 == pytest.approx(100.0)


def test_help_names_every_flag_of_the_issue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--channel", "--rate", "--count", "--duration", "--seed", "--speedup", "--start-time",
        "--invalid-ratio", "--duplicate-ratio", "--late-ratio", "--flash-sale",
    ):  # fmt: skip
        assert flag in out
