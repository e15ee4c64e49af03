"""compose.yaml is the app registry deployed: generated from it, valid in every profile, and
each profile is what docs/deploy.md says (brokers, scaling, SASL, the PostgreSQL catalog).

No Docker engine here: Debian's docker-compose (v1, Python) validates the file offline and
prints the configuration it would run (``.env`` interpolated, anchors merged). Its own
interpreter has PyYAML, so that configuration is read exactly as docker-compose read it.
Under CI (``CI=true``, where scripts/test.sh installs docker-compose) nothing here skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shopstream.apps import load_apps
from shopstream.cli.compose import (
    HEALTH_PY,
    PLANNED_APPS,
    PROFILES,
    compose_apps,
    compose_text,
    container_command,
)
from shopstream.kafka import transactional_id
from shopstream.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
PREFIX = {"dev": "", "lake": "", "cluster": "cluster-", "secure": "secure-"}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose must be installed under CI (scripts/test.sh does it)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    return found


@cache
def _config(profile: str) -> str:
    tool = docker_compose()
    # A clean environment: the shell's variables would win over .env.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    text = subprocess.run(
        [tool, "-f", str(REPO / "compose.yaml"), "--profile", profile, "config"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    ).stdout  # fmt: skip
    interpreter = Path(tool).read_text(errors="replace").splitlines()[0].removeprefix("#!")
    return subprocess.run(
        [interpreter.strip(), "-c",
         "import json,sys,yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def compose_config(profile: str) -> dict[str, Any]:
    """The configuration docker-compose reads for ``profile``: only that profile's services."""
    config = json.loads(_config(profile))
    config["services"] = {
        name: s for name, s in config["services"].items() if profile in s.get("profiles", [])
    }
    return config


def is_shopstream(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("shopstream")


def test_the_committed_file_is_the_one_the_registry_generates() -> None:
    assert (REPO / "compose.yaml").read_text() == compose_text(), (
        "compose.yaml is out of date with the app registry - run `shopstream compose`"
    )


def test_the_dashboard_is_deployed_whether_or_not_it_is_registered_yet() -> None:
    names = [a.name for a in compose_apps()]
    assert names.count("dashboard") == 1
    registered = load_apps().get("dashboard")
    if registered is not None:  # the registry's spec is the one used, and it agrees
        planned = next(a for a in PLANNED_APPS if a.name == "dashboard")
        assert (registered.command, registered.port) == (planned.command, planned.port)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_a_profile_starts_depends_only_on_services_it_starts(profile: str) -> None:
    services = compose_config(profile)["services"]
    for name, service in services.items():
        for needed, how in (service.get("depends_on") or {}).items():
            assert needed in services, f"{profile}: {name} waits for {needed}, not in the profile"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[needed], f"{needed} has no healthcheck"


@pytest.mark.parametrize("profile", PROFILES)
def test_one_service_per_app_of_the_registry_with_its_command(profile: str) -> None:
    services = compose_config(profile)["services"]
    prefix = "lake-" if profile == "lake" else PREFIX[profile]
    apps = {}
    for app in compose_apps():
        own = prefix if profile != "lake" or app.kind in {"sink", "dashboard"} else ""
        apps[f"{own}{app.name}"] = app
    deployed = {n for n, s in services.items() if is_shopstream(s) and not n.endswith("topics")}
    assert deployed == set(apps)
    for name, app in apps.items():
        service = services[name]
        assert service["command"] == container_command(app), name
        assert "container_name" not in service, name  # replicas need compose's names
        assert "healthcheck" in service, name
        if app.scalable or (profile == "lake" and app.kind == "sink"):
            assert not service.get("ports"), f"{name} scales: no fixed host port"
        if app.port:
            assert [p.removesuffix("/tcp") for p in service["ports"]] == [
                f"127.0.0.1:{app.port}:{app.port}"
            ]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_client_is_configured_for_its_profile(profile: str) -> None:
    services = compose_config(profile)["services"]
    clients = {n: s["environment"] for n, s in services.items() if is_shopstream(s)}
    brokers = sorted(n for n, s in services.items() if "redpandadata/redpanda:" in s["image"]
                     and s.get("command", [None])[0] == "redpanda")  # fmt: skip
    bootstrap = ",".join(f"{b}:9092" for b in brokers)
    assert clients
    assert all(env["SHOPSTREAM_BROKER_ADDRESS"] == bootstrap for env in clients.values())
    assert all(env["SHOPSTREAM_DATA_DIR"] == "/data" for env in clients.values())
    if profile == "cluster":
        assert brokers == ["redpanda-0", "redpanda-1", "redpanda-2"]
        assert all(env["SHOPSTREAM_REPLICATION_FACTOR"] == "3" for env in clients.values())
        seeds = {a for b in brokers for a in services[b]["command"] if a.startswith("--seeds=")}
        assert seeds == {"--seeds=redpanda-0:33145"}
    else:
        assert len(brokers) == 1
        assert all("SHOPSTREAM_REPLICATION_FACTOR" not in env for env in clients.values())
    if profile == "secure":
        for name, env in clients.items():
            assert env["SHOPSTREAM_SASL_MECHANISM"] == "SCRAM-SHA-256", name
            assert env["SHOPSTREAM_SASL_USERNAME"] == "shopstream", name
            assert env["SHOPSTREAM_SASL_PASSWORD"], name
            assert services[name]["depends_on"]["secure-users"]["condition"] == (
                "service_completed_successfully"
            )
        users = services["secure-users"]
        assert "rpk security user create" in users["command"][0]
        assert "enable_sasl true" in users["command"][0]
        console = services["secure-console"]["environment"]["CONSOLE_CONFIG_FILE"]
        assert "sasl:" in console and "SCRAM-SHA-256" in console
    else:
        assert all("SHOPSTREAM_SASL_MECHANISM" not in env for env in clients.values())


def test_the_lake_profile_puts_the_sink_and_readers_on_one_postgresql_catalog() -> None:
    services = compose_config("lake")["services"]
    assert "sink" not in services and "dashboard" not in services  # replaced, not doubled
    readers = {n: services[n] for n in ("lake-sink", "lake-dashboard")}
    catalogs = {s["environment"]["SHOPSTREAM_LAKE_CATALOG"] for s in readers.values()}
    paths = {s["environment"]["SHOPSTREAM_LAKE_DATA_PATH"] for s in readers.values()}
    assert len(catalogs) == 1 and catalogs.pop().startswith("postgres:dbname=lake host=postgres ")
    assert paths == {"/lake/files/"}
    assert all(s["volumes"] == ["lake-files:/lake/files:rw"] for s in readers.values()) or all(
        any(str(v).startswith("lake-files:/lake/files") for v in s["volumes"])
        for s in readers.values()
    )
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_DB"] == "lake"
    assert readers["lake-sink"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    others = [s for n, s in services.items() if is_shopstream(s) and n not in readers]
    assert all("SHOPSTREAM_LAKE_CATALOG" not in s["environment"] for s in others)


def test_versions_are_pinned_in_env_and_dev_is_the_default_profile() -> None:
    env = dict(
        line.split("=", 1)
        for line in (REPO / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["COMPOSE_PROFILES"] == "dev"
    for key in ("REDPANDA_VERSION", "REDPANDA_CONSOLE_VERSION", "POSTGRES_VERSION"):
        assert env[key][0] in "v0123456789" and env[key] != "latest", key
    images = {
        s["image"]
        for profile in PROFILES
        for s in compose_config(profile)["services"].values()
    }
    assert not [i for i in images if i.endswith(":latest") or ":" not in i], images


# --- the image ------------------------------------------------------------------------


def test_the_image_copies_every_package_the_project_installs() -> None:
    # A role missing from the image fails every command there: the CLI loads them all.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = {
        parts[1]
        for parts in (line.split() for line in dockerfile.splitlines())
        if len(parts) == 3 and parts[0] == "COPY" and parts[2] == f"./{parts[1]}"
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


def entrypoint() -> list[str]:
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return list(json.loads(line.removeprefix("ENTRYPOINT ")))
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"HOSTNAME": "3f9c1a2b7d4e"}, "3f9c1a2b7d4e"),
     ({"HOSTNAME": "3f9c1a2b7d4e", "SHOPSTREAM_INSTANCE_ID": "router-1"}, "router-1"),
     ({}, "0")],
)  # fmt: skip
def test_each_replica_gets_its_own_instance_id_from_its_hostname(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    # The image's own ENTRYPOINT, with a `shopstream` that reports what it was given.
    stub = tmp_path / "shopstream"
    stub.write_text('#!/bin/sh\necho "$SHOPSTREAM_INSTANCE_ID|$*"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(
        [*entrypoint(), "run", "router", "--namespace", "a b"],
        env=base | env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == f"{expected}|run router --namespace a b"


def test_replicas_with_their_own_hostnames_never_share_a_transactional_id() -> None:
    ids = {
        transactional_id("router", load_settings(instance_id=host))
        for host in ("3f9c1a2b7d4e", "a81b02c9e3f0", "0c4d5e6f7a8b")
    }
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("files", "healthy"),
    [({"router": (0, True)}, True),
     ({"router": (60, True)}, False),  # the process stopped publishing
     ({"router": (0, False)}, False),  # it cannot see its broker
     ({}, False)],  # it never started
)  # fmt: skip
def test_an_app_container_is_healthy_while_its_status_is_fresh(
    tmp_path: Path, files: dict[str, tuple[int, bool]], healthy: bool
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name, (age, broker_up) in files.items():
        doc = {"name": name, "updated_at": time.time() - age, "broker_up": broker_up}
        (run / f"{name}.json").write_text(json.dumps(doc))
    result = subprocess.run(
        [sys.executable, "-c", HEALTH_PY], env={**os.environ, "SHOPSTREAM_DATA_DIR": str(tmp_path)},
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert (result.returncode == 0) is healthy, result.stderr
