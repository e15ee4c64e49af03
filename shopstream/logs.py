"""The one logging set-up of every shopstream process, and a throttle for noisy warnings.

Every process (the CLI, each app that ``shopstream up`` starts, tests' child processes)
calls :func:`configure_logging` once: ``HH:MM:SS LEVEL logger: message`` lines on
stderr. ``shopstream up`` sends each child's stderr to ``<data_dir>/logs/<name>.log``.
"""

from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


def configure_logging(level: int = logging.INFO) -> None:
    """Log ``level`` and above to stderr in shopstream's format (once per process).

    Leaves an already configured root logger alone (pytest's, an embedding program's).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=level, format=FORMAT, datefmt=DATE_FORMAT)


class ThrottledLog:
    """Logs at most ``burst`` warnings per ``window`` seconds, then says how many it held back.

    Why: a channel sending garbage at a high rate must not turn the log into the data.
    """

    def __init__(self, logger: logging.Logger, burst: int = 20, window: float = 10.0) -> None:
        self._log = logger
        self._burst = burst
        self._window = window
        self._start = time.monotonic()
        self._logged = 0
        self._held = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start >= self._window:
            if self._held:
                self._log.warning(
                    "... and %d more like these in the last %.0fs", self._held, now - self._start
                )
            self._start, self._logged, self._held = now, 0, 0
        if self._logged < self._burst:
            self._logged += 1
            self._log.warning(msg, *args)
        else:
            self._held += 1
