"""Logging set-up, progress reporting and step timing for the command-line jobs.

Library modules only call ``logging.getLogger(__name__)``; the CLI calls
:func:`setup_logging` once. Progress is a tqdm bar on a terminal and a log line every ~10%
otherwise (CI logs, files), so every long step shows progress either way.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger("recsys")

ProgressFn = Callable[[int, int], None]


class _ThirdPartyNoise(logging.Filter):
    """Drops third-party records that say nothing to a user of this project.

    Apache Beam's import logs a warning on the root logger that Google Cloud's BigQuery
    client (apitools) is missing; nothing here uses BigQuery.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith("apitools not found"))


def setup_logging(verbosity: int = 0) -> None:
    """Log to stderr: INFO by default, DEBUG with ``-v``, WARNING with ``-q``.

    Apache Beam's own INFO lines (type hints, runner internals) show only with ``-v``.
    """
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ThirdPartyNoise())
    logging.getLogger("apache_beam").setLevel(level if verbosity > 0 else logging.WARNING)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Log the start and the duration of a step of a job."""
    log.info("%s ...", what)
    started = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - started)


class Progress:
    """A progress callback ``(done, total)``: a tqdm bar on a TTY, periodic log lines elsewhere."""

    def __init__(self, desc: str, unit: str = "it", enabled: bool = True) -> None:
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self._bar: object | None = None
        self._last_logged = -1.0
        self._started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` units are finished."""
        if not self.enabled or total <= 0:
            return
        if sys.stderr.isatty():
            if self._bar is None:
                self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False)
            bar = self._bar
            assert isinstance(bar, tqdm)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
            return
        share = done / total
        if share - self._last_logged >= 0.1 or done >= total:
            self._last_logged = share
            elapsed = time.perf_counter() - self._started
            log.info(
                "%s: %d/%d %s (%.0f%%, %.1f s)",
                self.desc,
                done,
                total,
                self.unit,
                100 * share,
                elapsed,
            )
