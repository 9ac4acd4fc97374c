"""Logging for pipeline steps: messages go to stderr and, when given, to a log file under logs/."""

from __future__ import annotations

import logging
import sys

from musicdecomp.io import ensure_parent

LOGGER_NAME = "musicdecomp"


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")


def setup_logging(log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    logger = get_logger()
    logger.setLevel(level)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_file:

        ensure_parent(log_file)
        fh = logging.FileHandler(log_file, mode="a")  # appended: a resumed training run's log keeps every call
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False
    return logger


def log_to_files(message: str) -> None:
    """Write an error line to the log files only (the CLI has already printed it on stderr)."""
    for h in get_logger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(logging.LogRecord(LOGGER_NAME, logging.ERROR, __file__, 0, message, None, None))


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr; MUSICDECOMP_PROGRESS=0 turns it off. Without tqdm (a bare GPU
    machine) it is a plain pass-through."""
    import os

    disable = os.environ.get("MUSICDECOMP_PROGRESS", "1") == "0"
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, file=sys.stderr, disable=disable, mininterval=1.0, **kwargs)


class _NoBar:
    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
