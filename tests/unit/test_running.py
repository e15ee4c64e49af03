"""The run loop every pipeline app runs in (``pipelines.runtime.running.run_app``), with
stand-ins for the Quix app: what is retried and what ends the process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from quixstreams.models.topics.exceptions import TopicNotFoundError

from pipelines.runtime.running import BuiltApp, run_app
from shopstream.errors import UserError
from shopstream.settings import load_settings


def test_a_failed_build_is_retried_like_a_failed_run(tmp_path: Path) -> None:
    """Building a Quix app talks to the broker (its topics are created and checked); seen
    on Apache Kafka: the changelog topic it had just created 'not found'. That is retried,
    not the end of the process."""
    with socket.socket() as server:  # an address that accepts TCP (the broker probe's check)
        server.bind(("127.0.0.1", 0))
        server.listen()
        settings = load_settings(
            broker_address=f"127.0.0.1:{server.getsockname()[1]}", data_dir=tmp_path
        )
        builds: list[int] = []

        def build() -> BuiltApp:
            builds.append(1)
            if len(builds) == 1:
                raise TopicNotFoundError('Topic "changelog__x" not found on the broker')
            return BuiltApp(_StoppedApp(), None)  # type: ignore[arg-type]

        run_app(settings, "probe", build)
    assert len(builds) == 2


def test_a_user_error_while_building_is_not_retried(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    def build() -> BuiltApp:
        raise UserError("state in data/state belongs to another broker")

    with pytest.raises(UserError):
        run_app(settings, "probe", build)


class _StoppedApp:
    """A Quix app stand-in whose run() returns at once, as after SIGTERM."""

    def run(self) -> None:
        return None
