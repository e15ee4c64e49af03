"""Where the read models live and how a process opens them: a DuckLake.

DuckDB lets one process write a database file and no other open it meanwhile; DuckLake
(DuckDB's lakehouse format) is a catalog database plus immutable Parquet files with ACID
snapshots, so one writer (the sink) and any number of readers in other processes (the
dashboard, a notebook) work at once. The catalog is SQLite in WAL mode by default
(``<data_dir>/lake/catalog.sqlite``, measured: no lock errors, reader queries ~14 ms) or
PostgreSQL (``SHOPSTREAM_LAKE_CATALOG=postgres:dbname=... host=...``) past one machine;
the data files go to ``SHOPSTREAM_LAKE_DATA_PATH`` (default ``<data_dir>/lake/files/``).

The DuckLake, SQLite and PostgreSQL extensions come from PyPI wheels (DuckDB's own signed
binaries, ``duckdb-extension-*``); :func:`connect` installs them from there into
shopstream's cache once (``INSTALL '<path>'``, the signature checked on ``LOAD``).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from shopstream.errors import UserError
from shopstream.settings import Settings

LAKE = "lake"
"""The name every connection attaches the read models under (``lake.gen_0001.orders``)."""
EXTENSIONS: dict[str, str] = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner",
                              "ducklake": "ducklake"}  # fmt: skip
"""Wheel name suffix -> the extension's own name (what ``LOAD`` takes)."""

CatalogKind = Literal["sqlite", "postgres"]


@dataclass(frozen=True, slots=True)
class LakeLocation:
    """A DuckLake: its catalog (``sqlite:PATH`` or ``postgres:DSN``) and its data path."""

    catalog: str
    data_path: str

    @classmethod
    def of(cls, settings: Settings) -> LakeLocation:
        root = Path(settings.data_dir).resolve() / "lake"
        catalog = settings.lake_catalog or f"sqlite:{root / 'catalog.sqlite'}"
        data = settings.lake_data_path or f"{root / 'files'}/"
        return cls(catalog, data if data.endswith("/") else data + "/")

    @property
    def kind(self) -> CatalogKind:
        return "postgres" if self.catalog.startswith("postgres:") else "sqlite"

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite catalog's file, or None for a PostgreSQL catalog."""
        return Path(self.catalog.removeprefix("sqlite:")) if self.kind == "sqlite" else None

    @property
    def local_dirs(self) -> list[str]:
        """Folders a reader may touch (its data files; the SQLite catalog's folder)."""
        dirs = [] if "://" in self.data_path else [self.data_path]
        if self.sqlite_file is not None:
            dirs.append(str(self.sqlite_file.parent) + "/")
        return dirs

    def describe(self) -> str:
        where = self.catalog if self.kind == "sqlite" else "postgres:<dsn>"
        return f"DuckLake {where}, data {self.data_path}"


def extension_dir() -> Path:
    """shopstream's DuckDB extension directory (outside the work tree, like the Kafka cache)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shopstream" / "duckdb-extensions"


def _wheel_binary(wheel: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{wheel}")
    if spec is None or spec.origin is None:
        raise UserError(f"duckdb-extension-{wheel} is not installed - `pip install -e .`")
    version = duckdb.__version__
    path = Path(spec.origin).parent / "extensions" / f"v{version}" / f"{wheel}.duckdb_extension"
    if not path.exists():
        raise UserError(f"duckdb-extension-{wheel} has no build for DuckDB {version} ({path})")
    return path


def load_extensions(con: duckdb.DuckDBPyConnection, kinds: tuple[str, ...]) -> None:
    """Install (once per machine, under a lock) and load the extensions ``kinds`` need."""
    folder = extension_dir()
    folder.mkdir(parents=True, exist_ok=True)
    installed = {
        name
        for (name,) in con.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE installed"
        ).fetchall()
    }
    missing = [w for w in kinds if EXTENSIONS[w] not in installed]
    if missing:
        with open(folder / ".install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for wheel in missing:
                con.execute(f"INSTALL '{_wheel_binary(wheel)}'")
    for wheel in kinds:
        con.execute(f"LOAD {EXTENSIONS[wheel]}")


def connect(settings: Settings, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the read models attached as ``lake``.

    A writer (``read_only=False``, the sink) creates the catalog if it is not there. A
    reader attaches read-only and then gives up every other file access
    (``enable_external_access`` off, only the lake's own folders allowed, configuration
    locked): a query cannot reach outside the read models. Attaching costs about 280 ms:
    keep the connection and take a ``cursor()`` per thread. A kept attach sees every new
    snapshot.
    """
    location = LakeLocation.of(settings)
    con = duckdb.connect(config={"extension_directory": str(extension_dir())})
    load_extensions(con, (location.kind, "ducklake"))
    options = [f"DATA_PATH '{location.data_path}'"]
    if (catalog_file := location.sqlite_file) is not None:
        if read_only and not catalog_file.exists():
            con.close()
            raise LakeMissing(location)
        catalog_file.parent.mkdir(parents=True, exist_ok=True)
        Path(location.data_path).mkdir(parents=True, exist_ok=True)
        # WAL: readers and the writer do not block each other (measured: 0 lock errors).
        options.append("META_JOURNAL_MODE 'WAL'")
    if read_only:
        options.append("READ_ONLY")
    attach = f"ATTACH 'ducklake:{location.catalog}' AS {LAKE} ({', '.join(options)})"
    try:
        try:
            con.execute(attach)
        except duckdb.Error as exc:
            # Two first attaches of an empty PostgreSQL catalog race to create it: the one
            # that loses finds it made by the other when it tries again.
            if "Failed to initialize DuckLake" not in str(exc) or read_only:
                raise
            con.execute(attach)
    except duckdb.Error as exc:
        con.close()
        if read_only and "does not exist" in str(exc):  # the writer is creating it right now
            raise LakeMissing(location) from None
        raise UserError(f"cannot open the read models ({location.describe()}): {exc}") from None
    con.execute("SET TimeZone = 'UTC'")  # days and minutes of the read models are UTC's
    if read_only:
        allowed = ", ".join(f"'{d}'" for d in location.local_dirs)
        con.execute(f"SET allowed_directories = [{allowed}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


class LakeMissing(UserError):
    """The read models do not exist yet (no sink has written them)."""

    def __init__(self, location: LakeLocation) -> None:
        super().__init__(
            f"no read models at {location.describe()} yet - start the sink "
            f"(`shopstream run sink`, part of `shopstream up`)"
        )
        self.location = location
