"""One log format, a quiet terminal, the details in each shard's own log.

- Every record, ubsafe's and third-party libraries' alike, has the same format (`LOG_FORMAT`).
- The terminal (stderr) shows warnings and errors, plus one progress line per stage (records
  logged through `progress_line`). `-v` shows every INFO record, `-vv` DEBUG.
- While a shard runs, every INFO record of the process (including libraries such as open_clip)
  goes to `logs/<stage>/shard-NNNNN.log` (`ubsafe.launch.worker.shard_log`).

Worker processes configure themselves the same way: the verbosity travels in `UBSAFE_VERBOSITY`.
"""

from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSITY_VARIABLE = "UBSAFE_VERBOSITY"
#: The logger of the progress lines the terminal shows at default verbosity.
PROGRESS_LOGGER = "ubsafe.progress"

_HANDLER_NAME = "ubsafe-terminal"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever `sys.stderr` is now (test runners and pools swap it)."""

    @property  # type: ignore[override,unused-ignore]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _TerminalFilter(logging.Filter):
    """At default verbosity: warnings and errors, and the progress lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == PROGRESS_LOGGER


def verbosity() -> int:
    try:
        return int(os.environ.get(VERBOSITY_VARIABLE, "0"))
    except ValueError:
        return 0


def configure(level: int | None = None) -> None:
    """Set up the terminal handler for `level` (0 default, 1 `-v`, 2 `-vv`); idempotent.

    The root logger passes INFO (DEBUG at -vv) so that shard logs get the details; the terminal
    handler decides what the user sees.
    """
    level = verbosity() if level is None else level
    os.environ[VERBOSITY_VARIABLE] = str(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = _Stderr()
    handler.set_name(_HANDLER_NAME)
    from ubsafe.escape import TerminalFormatter

    handler.setFormatter(TerminalFormatter(LOG_FORMAT))
    if level >= 2:
        handler.setLevel(logging.DEBUG)
    elif level == 1:
        handler.setLevel(logging.INFO)
    else:
        handler.setLevel(logging.INFO)
        handler.addFilter(_TerminalFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if level >= 2 else logging.INFO)
    logging.captureWarnings(True)


def progress_line(message: str, *args: object) -> None:
    """One line on the terminal at any verbosity (a stage's outcome), and in the logs."""
    logging.getLogger(PROGRESS_LOGGER).info(message, *args)
