"""The reference broker: Apache Kafka (KRaft, one node) assembled from Maven Central.

The embedded broker is what users run without Docker, but it is not a trustworthy
judge of delivery guarantees (hanging transactions after a crash, a wrong high
watermark: see ``docs/testing.md``). Apache Kafka is the reference implementation
of the protocol Redpanda speaks, and its broker is published as jars, so where a
JVM exists shopstream can run it with the same API as the embedded broker.

How it runs:

* The classpath is the runtime dependency set of the pom shipped in
  ``kafka-reference/pom.xml`` (``org.apache.kafka:kafka_2.13`` at the pinned
  version plus a log4j binding), copied by ``mvn dependency:copy-dependencies``
  into a cache outside the work tree: ``$SHOPSTREAM_KAFKA_CACHE`` or
  ``~/.cache/shopstream`` (``$XDG_CACHE_HOME/shopstream``), one folder per pom
  content. It is assembled once and reused; concurrent first uses are safe.
* Each start formats fresh storage in a temp dir (``kafka.tools.StorageTool
  format``), runs ``java -cp 'libs/*' kafka.Kafka server.properties`` on free
  loopback ports (client and controller), and deletes the temp dir on stop.
  Data therefore lives exactly as long as the broker process - unless a
  ``data_dir`` is given: then the log directory is formatted once and kept, and
  ``stop()`` followed by ``start()`` is a broker restart on the same log directory
  (durable, like Redpanda on its volume).
* ``scram_users`` adds a second client listener that requires SASL/SCRAM
  (``SCRAM-SHA-256`` and ``SCRAM-SHA-512``) at :attr:`KafkaReferenceBroker.sasl_address`,
  with those users' credentials written into the storage as it is formatted
  (``StorageTool format --add-scram``, the KRaft way: no user exists before the
  broker does). The plaintext listener stays for the broker itself (inter-broker
  traffic such as transaction markers, and the readiness probe); clients under test
  connect to the SASL one.

No Kafka code or jar is part of this repository.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal, Self

from shopstream.brokers.base import BrokerKind, BrokerProcess, BrokerStartError, free_port

logger = logging.getLogger(__name__)

CACHE_ENV = "SHOPSTREAM_KAFKA_CACHE"
"""Environment variable naming the cache root for assembled Kafka classpaths."""

MIN_JAVA = 17
"""Kafka 4.x brokers need Java 17 or newer."""

_RESOURCES = "kafka-reference"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
"""What the SASL listener offers (``scram_users`` get credentials for both)."""
_CREDENTIAL = re.compile(r"^[A-Za-z0-9._-]+$")
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _resource(name: str) -> bytes:
    return resources.files("shopstream.brokers").joinpath(_RESOURCES, name).read_bytes()


def _pom() -> bytes:
    return _resource("pom.xml")


@cache
def kafka_version() -> str:
    """The pinned Apache Kafka version: ``kafka.version`` in the shipped pom."""
    root = ET.fromstring(_pom())
    node = root.find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise RuntimeError("kafka-reference/pom.xml has no <kafka.version> property")
    return (node.text or "").strip()


def cache_root() -> Path:
    """Where assembled classpaths live: ``$SHOPSTREAM_KAFKA_CACHE`` or the user cache.

    Outside the work tree on purpose: a fresh clone reuses the jars a previous
    clone downloaded, and no jar can end up in a commit.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shopstream"


def kafka_home(root: Path | None = None) -> Path:
    """The folder for this pom's classpath (it holds ``libs/`` once assembled).

    Named after the Kafka version for people and after the pom's content for
    correctness: any edit to the pom (a version, a logging jar) assembles anew.
    """
    digest = hashlib.sha256(_pom()).hexdigest()[:12]
    return (root or cache_root()) / f"kafka-{kafka_version()}-{digest}"


def is_assembled(root: Path | None = None) -> bool:
    """True if the classpath for the shipped pom is in the cache (no download needed)."""
    return (kafka_home(root) / "libs").is_dir()


@dataclass(frozen=True, slots=True)
class StartupTiming:
    """How long one start of the reference broker took, for logs and CI notes."""

    what: Literal["assemble", "start"]
    seconds: float
    detail: str


_timings: list[StartupTiming] = []


def startup_timings() -> list[StartupTiming]:
    """Assemblies and starts done by this process so far, oldest first."""
    return list(_timings)


def assemble(root: Path | None = None, timeout: float = 900.0) -> Path:
    """Return the ``libs`` folder of the pinned Kafka, downloading it on first use.

    Guarantees: the returned folder is complete (it appears only by an atomic
    rename of a fully copied temp folder), and concurrent callers - other
    processes included - download at most once (an exclusive file lock
    serialises them; the losers find the winner's folder). Raises
    :class:`BrokerStartError` with Maven's last output lines if Maven fails.
    """
    home = kafka_home(root)
    libs = home / "libs"
    if libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError(
            f"Apache Kafka {kafka_version()} is not in {home.parent} and `mvn` is not on "
            f"PATH to assemble it - install Maven (apt-get install maven) or set {CACHE_ENV}"
        )
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f".{home.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process assembling Apache Kafka into %s", home)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if libs.is_dir():  # the other process finished while we waited
            return libs
        return _assemble_locked(mvn, home, timeout)


def _assemble_locked(mvn: str, home: Path, timeout: float) -> Path:
    version = kafka_version()
    logger.info(
        "assembling Apache Kafka %s from Maven Central into %s (first use only)", version, home
    )
    started = time.monotonic()
    build = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=home.parent))
    try:
        (build / "pom.xml").write_bytes(_pom())
        command = [
            mvn, "-q", "-B", "-Dstyle.color=never",
            "-f", str(build / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={build / 'libs'}",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, cwd=build
            )
        except subprocess.TimeoutExpired:
            raise BrokerStartError(
                f"Maven did not assemble Apache Kafka {version} within {timeout:.0f}s - "
                f"check access to Maven Central, then retry"
            ) from None
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise BrokerStartError(
                f"Maven could not assemble Apache Kafka {version} (exit {result.returncode})"
                f": {tail} - check access to Maven Central, then retry"
            )
        if not (build / "libs" / f"kafka_2.13-{version}.jar").is_file():
            raise BrokerStartError(
                f"Maven ran but kafka_2.13-{version}.jar is missing from {build / 'libs'}"
            )
        build.chmod(0o755)  # mkdtemp makes it private; a shared cache must be readable
        try:
            # The commit point: readers test for home/libs, which exists only after this.
            build.rename(home)
        except OSError:
            if not (home / "libs").is_dir():
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    seconds = time.monotonic() - started
    jars = len(list((home / "libs").glob("*.jar")))
    _timings.append(StartupTiming("assemble", seconds, f"Apache Kafka {version}, {jars} jars"))
    logger.info("assembled Apache Kafka %s (%d jars) in %.1fs", version, jars, seconds)
    return home / "libs"


@cache
def _java_major(java: str) -> int | None:
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' (or "1.8.0_412").
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def unavailable_reason(root: Path | None = None) -> str | None:
    """Why the reference broker cannot run on this machine, or None if it can.

    Checks what is needed without starting anything: a ``java`` of version 17
    or newer on PATH, and either the classpath already in the cache or ``mvn``
    on PATH to assemble it. Network access to Maven Central is not checked;
    a failing download surfaces as a :class:`BrokerStartError` from ``start()``.
    """
    java = shutil.which("java")
    if java is None:
        return f"no `java` on PATH (Apache Kafka {kafka_version()} needs Java {MIN_JAVA}+)"
    major = _java_major(java)
    if major is None:
        return f"`{java} -version` did not report a version"
    if major < MIN_JAVA:
        return f"Java {major} at {java} is too old (Apache Kafka 4 needs Java {MIN_JAVA}+)"
    if not is_assembled(root) and shutil.which("mvn") is None:
        return (
            f"no `mvn` on PATH to assemble Apache Kafka {kafka_version()} and no copy in "
            f"{kafka_home(root)}"
        )
    return None


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's ``Uuid.randomUuid``, never starting with '-' (it would read as
    a command-line flag).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class KafkaReferenceBroker(BrokerProcess):
    """Apache Kafka, one KRaft node (broker + controller), on loopback.

    ``start()`` assembles the classpath if the cache lacks it (logged with its
    duration), formats storage in a fresh temp dir and returns once the broker
    answers metadata (logged with the time it took). ``stop()`` sends SIGTERM
    (Kafka shuts down cleanly), kills after the grace period, and removes the
    temp dir with every record in it. Broker logs go to ``log_path`` if given,
    else to ``broker.log`` in the temp dir.

    ``config`` adds or overrides ``server.properties`` keys, e.g.
    ``{"auto.create.topics.enable": "true"}``. ``data_dir`` makes it durable: storage
    is formatted there on first start only and survives ``stop()``; later starts (of
    this object, same ports, or of a new one on the same folder and ports) resume it.
    ``scram_users`` (name -> password, letters, digits, ``._-``) opens a SASL/SCRAM
    listener at :attr:`sasl_address` that knows exactly those users (see the module
    docstring); a wrong password there fails authentication.
    """

    kind: BrokerKind = "kafka"

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        controller_port: int | None = None,
        cache_dir: Path | None = None,
        heap: str = "512m",
        config: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        scram_users: Mapping[str, str] | None = None,
        sasl_port: int | None = None,
    ) -> None:
        super().__init__(port=port, log_path=log_path)
        self.data_dir = data_dir
        self.controller_port = controller_port or free_port(self.host)
        while self.controller_port == self.port:
            self.controller_port = free_port(self.host)
        self.scram_users = dict(scram_users or {})
        for name, password in self.scram_users.items():
            if not (_CREDENTIAL.match(name) and _CREDENTIAL.match(password)):
                raise ValueError(
                    f"SCRAM user {name!r}: names and passwords are letters, digits and ._- "
                    "(StorageTool parses them unquoted)"
                )
        self.sasl_port: int | None = None
        if self.scram_users:
            self.sasl_port = sasl_port or free_port(self.host)
            while self.sasl_port in (self.port, self.controller_port):
                self.sasl_port = free_port(self.host)
        self.cache_dir = cache_dir
        self.heap = heap
        self.config = dict(config or {})
        self.workdir: Path | None = None
        self._given_log = log_path
        self._log_file: Path | None = None
        self._libs: Path | None = None

    @property
    def version(self) -> str:
        return kafka_version()

    @property
    def sasl_address(self) -> str:
        """``host:port`` of the SASL/SCRAM listener (only with ``scram_users``)."""
        if self.sasl_port is None:
            raise ValueError("this broker has no SASL listener: pass scram_users")
        return f"{self.host}:{self.sasl_port}"

    @property
    def description(self) -> str:
        where = (
            f"data in {self.data_dir}, kept when the broker stops"
            if self.data_dir
            else "data in a temp dir, deleted when the broker stops"
        )
        sasl = (
            f", SASL/SCRAM on {self.sasl_address} for {len(self.scram_users)} user(s)"
            if self.scram_users
            else ""
        )
        return (
            f"Apache Kafka {self.version} (KRaft, single node) listening on {self.address}"
            f"{sasl} ({where})"
        )

    @property
    def broker_log(self) -> Path | None:
        """The file the running broker logs to (None before ``start()``)."""
        return self._log_file

    def ready_timeout(self) -> float:
        # About 3 s when idle; allow for a JVM starting on a loaded 2-core CI machine.
        return 90.0

    def start(self) -> Self:
        if self._proc is not None:
            return self
        self._libs = assemble(self.cache_dir)
        started = time.monotonic()
        try:
            super().start()
        except BaseException:
            # The base class stops on a failed readiness wait, not on a failed spawn
            # (storage format); either way the temp dir must go.
            self.stop()
            raise
        seconds = time.monotonic() - started
        _timings.append(StartupTiming("start", seconds, f"{self.address}"))
        logger.info(
            "Apache Kafka %s ready on %s in %.1fs (log: %s)",
            self.version, self.address, seconds, self._log_file,
        )  # fmt: skip
        return self

    def stop(self, grace: float = 10.0) -> None:
        super().stop(grace)
        workdir, self.workdir = self.workdir, None
        if workdir is not None and self.data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    def server_properties(self, data_dir: Path) -> str:
        """The full ``server.properties`` text for this node."""
        dynamic = {
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "log.dirs": str(data_dir),
        } | self._sasl_properties() | self.config
        lines = [f"{key}={value}" for key, value in dynamic.items()]
        template = _resource("server.properties").decode()
        return f"{template}\n# --- per run (shopstream.brokers.kafka_reference) ---\n" + "".join(
            f"{line}\n" for line in lines
        )

    def _sasl_properties(self) -> dict[str, str]:
        if not self.scram_users:
            return {}
        plain = f"PLAINTEXT://{self.host}:{self.port}"
        sasl = f"SASL_PLAINTEXT://{self.host}:{self.sasl_port}"
        # The server side of SCRAM needs a login module per mechanism on the listener;
        # the credentials themselves are in the cluster metadata (--add-scram).
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"{plain},{sasl},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"{plain},{sasl}",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
            **{
                f"listener.name.sasl_plaintext.{m.lower()}.sasl.jaas.config": jaas
                for m in SCRAM_MECHANISMS
            },
        }

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerStartError(unavailable_reason(self.cache_dir) or "no `java` on PATH")
        return java

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self._libs is not None, "start() assembles the classpath first"
        java = self._java()
        classpath = str(self._libs / "*")
        if self.data_dir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="shopstream-kafka-"))
        else:
            self.workdir = self.data_dir
            self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        props = self.workdir / "server.properties"
        props.write_text(self.server_properties(data))
        log4j = self.workdir / "log4j2.properties"
        log4j.write_bytes(_resource("log4j2.properties"))
        # The base class reads log_path to quote the log's tail on a failed start.
        self.log_path = self._given_log or self.workdir / "broker.log"
        self._log_file = self.log_path
        logging_opt = f"-Dlog4j2.configurationFile={log4j}"

        if not (data / "meta.properties").exists():  # a durable log dir is formatted once
            self._format_storage(java, classpath, props, logging_opt)
        with open(self.log_path, "ab") as log:
            # The child keeps its own descriptor; ours can close right away.
            return subprocess.Popen(
                [
                    java, "-Xms128m", f"-Xmx{self.heap}",
                    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                    # Die visibly instead of limping on as a broker that answers nothing.
                    "-XX:+ExitOnOutOfMemoryError",
                    "-Djava.awt.headless=true", logging_opt,
                    "-cp", classpath, "kafka.Kafka", str(props),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C goes to its owner, which stops it last
            )  # fmt: skip

    def _format_storage(self, java: str, classpath: str, props: Path, logging_opt: str) -> None:
        started = time.monotonic()
        # A short-lived tool: C1 only and a small heap start it faster.
        command = [
            java, "-Xmx256m", "-XX:TieredStopAtLevel=1", logging_opt,
            "-cp", classpath, "kafka.tools.StorageTool",
            "format", "--cluster-id", _cluster_id(), "--config", str(props),
        ]  # fmt: skip
        for name, password in self.scram_users.items():
            for mechanism in SCRAM_MECHANISMS:
                command += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise BrokerStartError("Kafka storage format did not finish within 120s") from None
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise BrokerStartError(f"Kafka storage format failed: {tail}")
        logger.debug("formatted Kafka storage in %.1fs", time.monotonic() - started)
