"""A stop asked for before an app runs.

``shopstream run`` starts apps that spend a few seconds getting ready (broker identity, a
lake to open, topics to create) before their own signal handlers are installed. A SIGTERM
then must not kill the process mid-query (a traceback and exit code 1): it is noted here,
and the run loop (:func:`pipelines.runtime.running.run_app`) ends cleanly before it starts.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP = threading.Event()
"""Set by SIGINT/SIGTERM from :func:`note_early_stop` on."""


def note_early_stop() -> None:
    """From now until an app installs its own handlers, SIGINT/SIGTERM only set :data:`STOP`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        STOP.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
