"""``shopstream compose``: write ``compose.yaml`` from the app registry (``--check``: compare).

One container per process of the registry that targets compose (``apps_for("compose")``),
all from the one ``Dockerfile``, in four profiles that are alternatives (one at a time;
``.env`` makes ``dev`` the default):

* ``dev`` - one Redpanda (dev-container mode), Redpanda Console, a one-shot job that
  creates the topic catalog, every app, the read models (DuckLake on SQLite) on a named
  volume shared by the sink and the dashboard.
* ``cluster`` - three Redpanda brokers, replication factor 3, apps that scale with
  ``--scale cluster-NAME=N`` (up to the partition count).
* ``secure`` - Redpanda with SASL/SCRAM: a one-shot job creates the users with ``rpk``,
  every client authenticates.
* ``lake`` - the ``dev`` stack with the read models' DuckLake catalog in PostgreSQL and
  the data files on a shared volume: the sink scales (``--scale lake-sink=N``).

The file is generated so that it cannot drift from the registry: adding an app is one
entry point, then ``shopstream compose``; a test runs ``compose --check``. The model is
plain data (:func:`compose_model`), rendered by a small YAML writer (:func:`render`) that
keeps the output stable and readable (anchors for what every app of a stack shares);
tests read the file back through docker-compose itself, not through this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from shopstream.apps import AppSpec, apps_for
from shopstream.errors import UserError

PLANNED_APPS: tuple[AppSpec, ...] = (
    AppSpec(
        name="dashboard", kind="dashboard", description="The live dashboard",
        argv=("dashboard",), port=8501, order=95, scalable=False,
    ),
)  # fmt: skip
"""Apps compose runs even before their role registers them (the registry's spec wins)."""

PROFILES = ("dev", "cluster", "secure", "lake")
"""Every profile of the file; ``dev`` is the default (``COMPOSE_PROFILES`` in ``.env``)."""

HEALTH_PY = (
    "import glob,json,os,sys,time;"
    "d=os.environ.get('SHOPSTREAM_DATA_DIR','data');"
    "s=[json.load(open(p)) for p in glob.glob(d+'/run/*.json')];"
    "sys.exit(0 if s and all(time.time()-x['updated_at']<15 and x['broker_up'] for x in s)"
    " else 1)"
)
"""Container health of an app: its status file (``<data_dir>/run/NAME.json``, written every
second) is fresh and says it sees its broker. One process per container, one file."""

HTTP_HEALTH_PY = (
    "import sys,urllib.request as u;"
    "sys.exit(0 if u.urlopen('http://127.0.0.1:{port}/_stcore/health',timeout=3).read()"
    "==b'ok' else 1)"
)
"""Container health of an app serving a port (Streamlit's health endpoint)."""

DATA_DIR = "/data"
"""``SHOPSTREAM_DATA_DIR`` in every app container (the image's own volume: per replica)."""
LAKE_DIR = f"{DATA_DIR}/lake"
"""Where the read models' default SQLite lake lives; a named volume for sink and readers."""
LAKE_FILES = "/lake/files/"
"""The ``lake`` profile's data path: a named volume every sink replica and reader mounts."""


# --- a small, stable YAML writer ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comment:
    """A mapping key that renders as a ``# text`` line (its value is ignored)."""

    text: str


@dataclass(frozen=True, slots=True)
class Anchored:
    """A mapping rendered with an anchor: ``key: &name`` then the mapping."""

    name: str
    value: Mapping[Any, Any]


@dataclass(frozen=True, slots=True)
class Alias:
    """``*name``; as the value of the key ``<<``, a YAML merge of that anchor."""

    name: str


_PLAIN = re.compile(r"^(-{1,2}[A-Za-z]|[A-Za-z_/])[A-Za-z0-9_./:=@+-]*$")
_PLAIN_IN_FLOW = re.compile(r"^(-{1,2}[A-Za-z]|[A-Za-z_/])[A-Za-z0-9_./=@+-]*$")
"""Inside ``[...]`` PyYAML (docker-compose v1) rejects a ``:`` in a plain scalar."""
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any, flow: bool = False) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted (JSON's escapes are
    YAML's). Anything starting with a digit is quoted: YAML 1.1 reads ``1:30`` as 90."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Alias):
        return f"*{value.name}"
    text = str(value)
    if text == "<<":
        return text  # the merge key, plain by definition
    plain = _PLAIN_IN_FLOW if flow else _PLAIN
    if plain.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (Mapping, list, tuple, Anchored))


def _lines(value: Any, indent: int) -> Iterator[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, Comment):
                yield f"{pad}# {key.text}" if key.text else ""
                continue
            yield from _entry(f"{pad}{_scalar(key)}:", item, indent)
    else:
        for item in value:
            if isinstance(item, str) and "\n" in item:
                yield from _block(f"{pad}-", item, indent)
            elif _is_scalar(item):
                yield f"{pad}- {_scalar(item)}"
            else:
                inner = list(_lines(item, indent + 2))
                yield f"{pad}- {inner[0].lstrip()}"
                yield from inner[1:]


def _block(head: str, text: str, indent: int) -> Iterator[str]:
    """A literal block scalar (``|``): the text as it is, indented under ``head``."""
    yield f"{head} |{'' if text.endswith(chr(10)) else '-'}"
    for line in text.rstrip("\n").split("\n"):
        yield f"{' ' * (indent + 2)}{line}" if line else ""


def _entry(head: str, item: Any, indent: int) -> Iterator[str]:
    if isinstance(item, Anchored):
        yield f"{head} &{item.name}"
        yield from _lines(item.value, indent + 2)
    elif isinstance(item, str) and "\n" in item:
        yield from _block(head, item, indent)
    elif (
        isinstance(item, (list, tuple)) and item
        and all(_is_scalar(i) and not (isinstance(i, str) and "\n" in i) for i in item)
    ):
        flow = f"{head} [{', '.join(_scalar(i, flow=True) for i in item)}]"
        if len(flow) <= 100:
            yield flow
        else:
            yield head
            yield from _lines(item, indent + 2)
    elif isinstance(item, (Mapping, list, tuple)):
        if not item:
            yield f"{head} {'{}' if isinstance(item, Mapping) else '[]'}"
        else:
            yield head
            yield from _lines(item, indent + 2)
    elif item is None:
        yield head
    else:
        yield f"{head} {_scalar(item)}"


def render(model: Mapping[Any, Any], header: str = "", spaced: bool = True) -> str:
    """The YAML text of ``model`` (mappings, lists, scalars, :class:`Comment` keys,
    :class:`Anchored` and :class:`Alias`) after ``header`` as comment lines: deterministic;
    ``spaced``: blank lines between top-level sections and between services."""
    out: list[str] = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in model.items():
        if spaced and out and out[-1] != "":
            out.append("")
        if key == "services":
            out.append("services:")
            for i, (name, service) in enumerate(value.items()):
                if i and out[-1] != "" and not out[-1].startswith("  #"):
                    out.append("")
                if isinstance(name, Comment):
                    out.append(f"  # {name.text}")
                else:
                    out.extend(_entry(f"  {_scalar(name)}:", service, 2))
        else:
            out.extend(_lines({key: value}, 0))
    return "\n".join(out) + "\n"


# --- the deployment -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stack:
    """One broker setup and the apps on it: a profile's services (``prefix`` + app name)."""

    profile: str
    prefix: str
    brokers: tuple[str, ...]
    env: Mapping[str, str]
    """Settings every shopstream container of the stack gets."""
    profiles: tuple[str, ...] = ()
    """Profiles its broker, topics job and apps belong to (default: ``(profile,)``)."""
    after: tuple[str, ...] = ()
    """One-shot jobs every client waits for (the secure profile's users)."""
    console_kafka: Mapping[str, Any] = field(default_factory=dict)

    @property
    def member_of(self) -> list[str]:
        return list(self.profiles or (self.profile,))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{b}:9092" for b in self.brokers)


DEV = Stack(
    "dev", "", ("redpanda",),
    {"SHOPSTREAM_BROKER_ADDRESS": "redpanda:9092"},
    profiles=("dev", "lake"),
)  # fmt: skip
CLUSTER = Stack(
    "cluster", "cluster-", ("redpanda-0", "redpanda-1", "redpanda-2"),
    {"SHOPSTREAM_BROKER_ADDRESS": "redpanda-0:9092,redpanda-1:9092,redpanda-2:9092",
     "SHOPSTREAM_REPLICATION_FACTOR": "3"},
)  # fmt: skip
SECURE = Stack(
    "secure", "secure-", ("secure-redpanda",),
    {"SHOPSTREAM_BROKER_ADDRESS": "secure-redpanda:9092",
     "SHOPSTREAM_SASL_MECHANISM": "SCRAM-SHA-256",
     "SHOPSTREAM_SASL_USERNAME": "shopstream",
     "SHOPSTREAM_SASL_PASSWORD": "${SECURE_APP_PASSWORD}"},
    after=("secure-users",),
    console_kafka={"sasl": {"enabled": True, "username": "admin",
                            "password": "${SECURE_ADMIN_PASSWORD}",
                            "mechanism": "SCRAM-SHA-256"}},
)  # fmt: skip
STACKS = (DEV, CLUSTER, SECURE)

LAKE_DSN = "dbname=lake host=postgres user=shopstream password=${LAKE_POSTGRES_PASSWORD}"
LAKE_ENV = {
    "SHOPSTREAM_LAKE_CATALOG": f"postgres:{LAKE_DSN}",
    "SHOPSTREAM_LAKE_DATA_PATH": LAKE_FILES,
}
"""The one setting (and where the files go) that puts sink and readers on PostgreSQL."""


def compose_apps() -> list[AppSpec]:
    """The apps compose runs, in start order: the registry's, plus planned ones."""
    apps = {a.name: a for a in apps_for("compose")}
    for spec in PLANNED_APPS:
        apps.setdefault(spec.name, spec)
    return sorted(apps.values(), key=lambda a: (a.order, a.name))


def container_command(app: AppSpec) -> list[str]:
    """The app's command line in a container: an app serving a port listens on every
    interface of its container (compose publishes the port on the host's loopback only)."""
    command = list(app.command)
    return [*command, "--address", "0.0.0.0"] if app.port else command


def _redpanda(name: str, seed: str | None, external: int, admin_port: int | None) -> dict[str, Any]:
    command = [
        "redpanda", "start",
        f"--kafka-addr=internal://0.0.0.0:9092,external://0.0.0.0:{external}",
        f"--advertise-kafka-addr=internal://{name}:9092,external://127.0.0.1:{external}",
        "--pandaproxy-addr=internal://0.0.0.0:8082,external://0.0.0.0:18082",
        f"--advertise-pandaproxy-addr=internal://{name}:8082,external://127.0.0.1:18082",
        "--schema-registry-addr=internal://0.0.0.0:8081,external://0.0.0.0:18081",
        f"--rpc-addr={name}:33145", f"--advertise-rpc-addr={name}:33145",
        "--mode=dev-container", "--smp=1", "--default-log-level=info",
    ]  # fmt: skip
    ports = [f"127.0.0.1:{external}:{external}"]
    if seed is None or seed == name:
        ports += ["127.0.0.1:18081:18081", "127.0.0.1:18082:18082"]
    if admin_port:
        ports.append(f"127.0.0.1:{admin_port}:9644")
    if seed is not None:
        command.append(f"--seeds={seed}:33145")
    return {
        "image": "docker.redpanda.com/redpandadata/redpanda:${REDPANDA_VERSION}",
        "command": command,
        "ports": ports,
        "volumes": [f"{name}-data:/var/lib/redpanda/data"],
        "healthcheck": {
            "test": ["CMD-SHELL", "rpk cluster health | grep -E 'Healthy:.+true' || exit 1"],
            "interval": "5s", "timeout": "5s", "retries": 30, "start_period": "10s",
        },
    }


def _console(stack: Stack) -> dict[str, Any]:
    first = stack.brokers[0]
    kafka: dict[str, Any] = {"brokers": [f"{b}:9092" for b in stack.brokers]}
    kafka.update(stack.console_kafka)
    config = {
        "kafka": kafka,
        "schemaRegistry": {"enabled": True, "urls": [f"http://{first}:8081"]},
        "redpanda": {"adminApi": {"enabled": True, "urls": [f"http://{first}:9644"]}},
    }
    return {
        "image": "docker.redpanda.com/redpandadata/console:${REDPANDA_CONSOLE_VERSION}",
        "profiles": [*stack.member_of],
        Comment("Console v3 reads its configuration from a file: written from the variable."):
            None,
        "entrypoint": "/bin/sh",
        "command": ["-c", 'echo "$$CONSOLE_CONFIG_FILE" > /tmp/config.yml && exec /app/console'],
        "environment": {
            "CONFIG_FILEPATH": "/tmp/config.yml",
            "CONSOLE_CONFIG_FILE": render(config, spaced=False),
        },
        "ports": ["127.0.0.1:8080:8080"],
        "depends_on": _depends(stack, brokers=True, jobs=True),
        "restart": "unless-stopped",
    }


def _depends(
    stack: Stack, *, brokers: bool = False, jobs: bool = False, topics: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if brokers:
        out.update({b: {"condition": "service_healthy"} for b in stack.brokers})
    if jobs:
        out.update({j: {"condition": "service_completed_successfully"} for j in stack.after})
    if topics:
        out[f"{stack.prefix}topics"] = {"condition": "service_completed_successfully"}
    out.update({name: {"condition": c} for name, c in (extra or {}).items()})
    return out


def _app_base(stack: Stack) -> Anchored:
    return Anchored(f"{stack.profile}-app", {
        "image": "${SHOPSTREAM_IMAGE}",
        "build": {"context": ".", "args": {"PYTHON_VERSION": "${PYTHON_VERSION}"}},
        "profiles": stack.member_of,
        "init": True,
        "restart": "unless-stopped",
        Comment("SIGTERM: every app commits its last checkpoint before it exits."): None,
        "stop_grace_period": "30s",
        "environment": Anchored(f"{stack.profile}-env", {
            **stack.env,
            "SHOPSTREAM_PARTITIONS": "${SHOPSTREAM_PARTITIONS}",
            "SHOPSTREAM_DATA_DIR": DATA_DIR,
        }),
        "healthcheck": {
            "test": ["CMD", "python", "-c", HEALTH_PY],
            "interval": "10s", "timeout": "5s", "retries": 6, "start_period": "30s",
        },
        "depends_on": _depends(stack, brokers=True, jobs=True, topics=True),
    })


def _app(
    stack: Stack, app: AppSpec, *, profiles: Sequence[str] = (),
    env: Mapping[str, str] | None = None, volume: str | None = None, needs: Sequence[str] = (),
) -> dict[str, Any]:
    """The service of ``app`` in ``stack``: the stack's anchor, plus what differs (other
    ``profiles``, more ``env``, a ``volume``, services it ``needs`` healthy first)."""
    service: dict[str, Any] = {"<<": Alias(f"{stack.profile}-app")}
    if profiles:
        service["profiles"] = list(profiles)
    service["command"] = container_command(app)
    if env:
        service["environment"] = {"<<": Alias(f"{stack.profile}-env"), **env}
    if volume:
        service["volumes"] = [volume]
    if app.port:
        service["ports"] = [f"127.0.0.1:{app.port}:{app.port}"]
        service["healthcheck"] = {
            "test": ["CMD", "python", "-c", HTTP_HEALTH_PY.format(port=app.port)],
            "interval": "10s", "timeout": "5s", "retries": 6, "start_period": "30s",
        }  # fmt: skip
    if needs:
        service["depends_on"] = _depends(stack, brokers=True, jobs=True, topics=True) | {
            name: {"condition": "service_healthy"} for name in needs
        }
    return service


def _topics_job(stack: Stack) -> dict[str, Any]:
    return {
        "image": "${SHOPSTREAM_IMAGE}",
        "build": {"context": ".", "args": {"PYTHON_VERSION": "${PYTHON_VERSION}"}},
        "profiles": stack.member_of,
        "command": ["topics", "create"],
        "environment": {"<<": Alias(f"{stack.profile}-env")},
        "restart": "no",
        "depends_on": _depends(stack, brokers=True, jobs=True),
    }


SECURE_USERS_SCRIPT = """\
rpk() { command rpk -X brokers=secure-redpanda:9092 -X admin.hosts=secure-redpanda:9644 "$$@"; }
# Users and cluster settings go through the Admin API (this network only).
for user in admin:$$ADMIN_PASSWORD shopstream:$$APP_PASSWORD; do
  name=$${user%%:*}
  rpk security user list | grep -qx "$$name" \\
    || rpk security user create "$$name" -p "$${user#*:}" --mechanism SCRAM-SHA-256
done
rpk cluster config set superusers "['admin']"
rpk cluster config set enable_sasl true
# From here on the Kafka API wants a SASL login: the apps' user may use shopstream's
# topics, groups and transactional ids, and create topics.
auth="-X user=admin -X pass=$$ADMIN_PASSWORD -X sasl.mechanism=SCRAM-SHA-256"
rpk security acl create $$auth --allow-principal User:shopstream --operation all \\
  --topic '*' --group '*' --transactional-id '*'
rpk security acl create $$auth --allow-principal User:shopstream --operation all --cluster
echo "SASL/SCRAM on: users admin and shopstream"
"""


def _rule(title: str) -> str:
    return f"--- {title} ".ljust(86, "-")


def compose_model(apps: Sequence[AppSpec]) -> dict[Any, Any]:
    """The whole compose file as data, for ``apps`` (see the module docstring)."""
    services: dict[Any, Any] = {}
    anchors: dict[Any, Any] = {}
    volumes: dict[str, None] = {}
    sink = next((a.name for a in apps if a.kind == "sink"), None)
    for stack in STACKS:
        anchors[f"x-{stack.profile}-app"] = _app_base(stack)
        services[Comment(_rule(f"profile {stack.profile}"))] = None
        if stack is CLUSTER:
            for name in stack.brokers:
                node = _redpanda(name, stack.brokers[0], 19092 + 10000 * stack.brokers.index(name),
                                 None)  # fmt: skip
                services[name] = {"profiles": stack.member_of, **node}
                volumes[f"{name}-data"] = None
        else:
            node = _redpanda(stack.brokers[0], None, 19092, 19644)
            services[stack.brokers[0]] = {"profiles": stack.member_of, **node}
            volumes[f"{stack.brokers[0]}-data"] = None
        if stack is SECURE:
            services["secure-users"] = {
                "image": "docker.redpanda.com/redpandadata/redpanda:${REDPANDA_VERSION}",
                "profiles": stack.member_of,
                "entrypoint": ["/bin/bash", "-ec"],
                "command": [SECURE_USERS_SCRIPT],
                "environment": {
                    "ADMIN_PASSWORD": "${SECURE_ADMIN_PASSWORD}",
                    "APP_PASSWORD": "${SECURE_APP_PASSWORD}",
                },
                "restart": "no",
                "depends_on": _depends(stack, brokers=True),
            }
        services[f"{stack.prefix}console"] = _console(stack)
        services[f"{stack.prefix}topics"] = _topics_job(stack)
        readmodels = f"{stack.prefix}readmodels"
        volumes[readmodels] = None
        for app in apps:
            shares = app.kind in {"sink", "dashboard"}  # the read models' writer and reader
            services[f"{stack.prefix}{app.name}"] = _app(
                stack, app,
                # The lake profile runs the dev stack but its own sink and readers.
                profiles=["dev"] if stack is DEV and shares else [],
                volume=f"{readmodels}:{LAKE_DIR}" if shares else None,
                needs=[f"{stack.prefix}{sink}"] if app.kind == "dashboard" and sink else [],
            )  # fmt: skip
    services[Comment(_rule("profile lake: the dev stack, read models in PostgreSQL"))] = None
    services["postgres"] = {
        "image": "postgres:${POSTGRES_VERSION}",
        "profiles": ["lake"],
        "environment": {
            "POSTGRES_DB": "lake", "POSTGRES_USER": "shopstream",
            "POSTGRES_PASSWORD": "${LAKE_POSTGRES_PASSWORD}",
        },
        "volumes": ["lake-catalog:/var/lib/postgresql/data"],
        "healthcheck": {
            "test": ["CMD-SHELL", "pg_isready -U shopstream -d lake"],
            "interval": "5s", "timeout": "5s", "retries": 20,
        },
        "restart": "unless-stopped",
    }
    for app in apps:
        if app.kind in {"sink", "dashboard"}:
            services[f"lake-{app.name}"] = _app(
                DEV, app, profiles=["lake"], env=LAKE_ENV,
                volume=f"lake-files:{LAKE_FILES.rstrip('/')}",
                needs=["postgres", *([f"lake-{sink}"] if app.kind == "dashboard" and sink else [])],
            )  # fmt: skip
    volumes["lake-catalog"] = None
    volumes["lake-files"] = None
    return {**anchors, "services": services, "volumes": volumes}


HEADER = """\
GENERATED by `shopstream compose` from the app registry - edit shopstream/cli/compose.py,
then run `shopstream compose`; a test fails when this file and the registry disagree.

shopstream on Redpanda: one container per process, all from the one Dockerfile; versions
and local passwords in .env. Profiles are alternatives, one at a time (see docs/deploy.md):
  docker compose up -d --build                              dev (the default, from .env)
  docker compose --profile cluster up -d --build --scale cluster-router=3
  docker compose --profile secure up -d --build             SASL/SCRAM for every client
  docker compose --profile lake up -d --build --scale lake-sink=2
Stop a profile with the same flag: `docker compose --profile cluster down`.
On the host (loopback only): Kafka 127.0.0.1:19092 (cluster: also 29092, 39092), Console
http://127.0.0.1:8080, dashboard http://127.0.0.1:8501, schema registry 18081."""


def compose_text() -> str:
    """``compose.yaml`` as the registry implies it now."""
    return render(compose_model(compose_apps()), header=HEADER)


@click.command("compose")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("compose.yaml"),
    show_default=True,
)  # fmt: skip
@click.option("--check", is_flag=True, help="Fail if the file differs instead of writing it.")
def compose(out: Path, check: bool) -> None:
    """Write compose.yaml: one service per app of the registry, in every profile."""
    text = compose_text()
    if check:
        if not out.exists() or out.read_text() != text:
            raise UserError(
                f"{out} is out of date with the app registry - run `shopstream compose`"
            )
        click.echo(f"{out} matches the app registry ({len(compose_apps())} apps)")
        return
    out.write_text(text)
    click.echo(f"{out} written: {len(compose_apps())} apps in profiles {', '.join(PROFILES)}")
