"""Replay: a new consumer group reads the order history from offset zero into a fresh model,
beside the live one, and the two are compared at the same offsets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import streamlit as st

from dashboard.state import guarded, models, settings
from pipelines.replay import engine
from readmodels.queries import ReadModels
from shopstream.settings import settings_env

RUNNING_STALE_S = 5.0


LAUNCHED = "replay_launched"
"""Session key: replay name -> (its process, its log) for the replays this session started."""


def _launch(args: list[str], name: str) -> None:
    """Run ``shopstream <args>`` for replay ``name`` in the background (it outlives page
    reruns); its output goes to ``logs/replay-<name>.log``."""
    s = settings()
    log_dir = Path(s.data_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"replay-{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shopstream", *args], env=settings_env(s),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    st.session_state.setdefault(LAUNCHED, {})[name] = (process, log_path)


def _failed_launch(name: str) -> str | None:
    """The end of the log of this session's replay ``name`` if its process exited with an
    error (a replay that cannot start writes no progress: the page would wait forever)."""
    process, log_path = st.session_state.get(LAUNCHED, {}).get(name, (None, None))
    if process is None or process.poll() in (None, 0):
        return None
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    return "\n".join(lines[-12:]) or f"exit code {process.returncode}"


def _running(progress: engine.Progress | None) -> bool:
    return (
        progress is not None
        and progress.state == "running"
        and time.time() - progress.updated_at < RUNNING_STALE_S
    )


def render() -> None:
    st.title("Replay")
    st.caption(
        "Event streaming: the log keeps every event, so a consumer that arrives late reads "
        "the whole history from offset zero at its own pace. A replay starts a new consumer "
        "group on the order history, rebuilds the order-history model into a fresh schema "
        "beside the live one, and compares the two at the same offsets."
    )
    rm = models()
    known = guarded(lambda: _replays(rm))
    if known is None:
        return
    # The suggested name is chosen once per session: a default that changed on every rerun
    # would make a new widget each time and throw away what the user typed.
    st.session_state.setdefault("replay_name", f"r{int(time.time()) % 100000}")
    with st.form("start_replay"):
        cols = st.columns([2, 3, 2])
        name = cols[0].text_input("name", key="replay_name")
        topics = cols[1].multiselect("history topics", engine.REPLAYABLE, default=["orders"])
        since = cols[2].text_input("from time (ISO, optional)", placeholder="offset 0")
        if st.form_submit_button("Start replay from offset 0", type="primary"):
            chosen = [arg for topic in topics for arg in ("--topic", topic)]
            args = ["replay", "start", name, "--plain", *chosen]
            if since.strip():
                args += ["--from-time", since.strip()]
            _launch(args, name)
            st.session_state["replay_watch"] = name
            st.toast(f"replay {name} started")
            time.sleep(1.0)
    if known:
        st.subheader("Replay models")
        st.dataframe(pl.DataFrame(known), hide_index=True)
    names = [r["name"] for r in known]
    watch = st.session_state.get("replay_watch")
    if watch and watch not in names:
        names = [watch, *names]
    if not names:
        st.info("No replay yet: start one above.")
        return
    chosen = st.selectbox("replay", names, index=names.index(watch) if watch in names else 0)
    _progress(chosen)


@st.fragment(run_every=1.0)
def _progress(name: str) -> None:
    s = settings()
    progress = engine.read_progress(s, name)
    if progress is None:
        failure = _failed_launch(name)
        if failure is None:
            st.caption("waiting for the replay to start ...")
        else:
            st.error(f"Replay {name} did not start. The end of its log:", icon=":material/error:")
            st.code(failure, language=None)
        return
    running = _running(progress)
    state = progress.state if running or progress.state != "running" else "stopped"
    if state == "stopped" and (failure := _failed_launch(name)) is not None:
        st.error(f"Replay {name} stopped with an error. The end of its log:",
                 icon=":material/error:")  # fmt: skip
        st.code(failure, language=None)
    cols = st.columns(4)
    cols[0].metric("state", state)
    cols[1].metric("events replayed", f"{progress.events:,}")
    cols[2].metric("rate (events/s)", f"{progress.rate:,.0f}")
    eta = progress.eta_s
    cols[3].metric("time left", f"{eta:.0f} s" if eta is not None and running else "-")
    rows = [
        {"partition": f"{p.topic}[{p.partition}]", "offset": p.position, "target": p.target,
         "high watermark": p.high_watermark, "done": round(100 * p.fraction, 1)}
        for p in progress.partitions
    ]  # fmt: skip
    st.dataframe(
        pl.DataFrame(rows), hide_index=True,
        column_config={"done": st.column_config.ProgressColumn("done (%)", min_value=0,
                                                               max_value=100, format="%.1f")},
    )  # fmt: skip
    buttons = st.columns(3)
    if running and buttons[0].button("Stop", key=f"stop_{name}"):
        os.kill(progress.pid, signal.SIGTERM)
    if not running and state != "done" and buttons[0].button("Resume", key=f"resume_{name}"):
        _launch(["replay", "start", name, "--plain"], name)
    if not running and buttons[2].button("Drop this replay", key=f"drop_{name}"):
        _launch(["replay", "drop", name], name)
        st.session_state.pop("replay_watch", None)
    if any(p.high_watermark < p.position for p in progress.partitions):
        st.caption(
            "High watermarks below the replayed offsets: the embedded broker reports the last "
            "batch's first offset + 1, not the last record's (docs/testing.md). The replay "
            "stops at the live model's offsets, which are exact."
        )
    if progress.state == "done":
        _comparison(name, progress.updated_at)


def _comparison(name: str, finished: float) -> None:
    """The verdict, computed once per finished replay (the fragment reruns every second)."""
    key = f"replay_comparison_{name}"
    cached = st.session_state.get(key)
    if cached is None or cached[0] != finished:
        cursor = models().cursor()
        try:
            cached = (finished, engine.compare(cursor, name))
        except Exception as exc:
            st.info(f"No comparison: {exc}")
            return
        finally:
            cursor.close()
        st.session_state[key] = cached
    results = cached[1]
    equal = all(r.equal for r in results)
    if equal:
        st.success(
            "Same log, same offsets, same model: the rebuilt order history equals the live "
            "read models at the same offsets, table by table.", icon=":material/check_circle:",
        )  # fmt: skip
    else:
        st.error("The rebuilt model differs from the live one.", icon=":material/error:")
    st.dataframe(
        pl.DataFrame([
            {"table": r.table, "replay rows": r.replay_rows, "live rows": r.live_rows,
             "only in replay": r.only_in_replay, "only in live": r.only_in_live,
             "equal": r.equal}
            for r in results
        ]),
        hide_index=True,
    )  # fmt: skip
    for r in results:
        if r.samples:
            st.caption(f"{r.table}: sample differences")
            st.dataframe(pl.DataFrame(r.samples), hide_index=True)


def _replays(rm: ReadModels) -> list[dict[str, object]]:
    cursor = rm.cursor()
    try:
        return engine.replays(cursor)
    finally:
        cursor.close()
