"""The common shape of a broker process and the readiness check they share."""

from __future__ import annotations

import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from shopstream.errors import UserError

BrokerKind = Literal["embedded", "kafka"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class BrokerStartError(UserError):
    """The broker process exited or never answered metadata."""


class BrokerProcess(ABC):
    """A single-node Kafka-API broker running as a child process on loopback.

    ``start()`` returns only once the broker answers a metadata request;
    ``stop()`` terminates it (SIGTERM, then SIGKILL after a grace period) and is
    safe to call twice.
    """

    kind: BrokerKind
    host: str = "127.0.0.1"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port(self.host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` to use as ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        """True while the started process runs (False before start and after it died)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The started process's exit code once it has died on its own, else None."""
        return self._proc.poll() if self._proc is not None else None

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for logs: what runs, where, and how durable it is."""

    @abstractmethod
    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the process; return it without waiting for readiness."""

    def ready_timeout(self) -> float:
        return 30.0

    def start(self) -> Self:
        if self._proc is not None:
            return self
        if port_in_use(self.host, self.port):
            raise BrokerStartError(
                f"port {self.port} on {self.host} is already in use - "
                f"stop what listens there or pick another with --port"
            )
        self._proc = self._spawn()
        try:
            wait_until_ready(self.address, self.ready_timeout(), self._proc, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self) -> int:
        """Block until the process exits; return its exit code."""
        assert self._proc is not None, "broker not started"
        return self._proc.wait()

    def stop(self, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_until_ready(
    address: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll metadata until the broker at ``address`` lists at least one broker."""
    deadline = time.monotonic() + timeout
    # log_level 0: "connection refused" while the broker boots is expected, not news.
    admin = AdminClient(
        {"bootstrap.servers": address, "socket.connection.setup.timeout.ms": 1000, "log_level": 0}
    )
    while True:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log_path)
            raise BrokerStartError(
                f"broker process exited with code {proc.returncode} before answering "
                f"metadata at {address}{tail}"
            )
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise BrokerStartError(f"broker at {address} did not answer metadata in {timeout:.0f}s")
        time.sleep(0.1)


def _tail(log_path: Path | None, lines: int = 3) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").strip().splitlines()[-lines:]
    return (" - log: " + " | ".join(text)) if text else ""

