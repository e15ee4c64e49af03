"""``shopstream produce`` on the command line: flags, one-line errors, plugin wiring."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import pytest

from producers.cli import DurationParam, StartTimeParam, produce, up_processes
from shopstream.cli.main import main
from shopstream.plugins import UpProcess, load_commands, load_up_processes
from shopstream.settings import load_settings


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


def test_up_starts_one_producer_for_every_channel_after_the_services() -> None:
    settings = load_settings()
    processes = up_processes(settings)
    assert processes == [
        UpProcess("producer", ("produce", "--channel", "all", "--rate", "100"), order=90)
    ]
    assert processes[0] in load_up_processes(settings)
    # The argv parses: the demo command line is a valid one.
    ctx = produce.make_context("produce", list(processes[0].argv[1:]))
    assert ctx.params["channels"] == frozenset({"mobile", "pos", "web", "warehouse"})


def test_help_names_every_flag_of_the_issue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--channel", "--rate", "--count", "--duration", "--seed", "--speedup", "--start-time",
        "--invalid-ratio", "--duplicate-ratio", "--late-ratio", "--flash-sale",
    ):  # fmt: skip
        assert flag in out
