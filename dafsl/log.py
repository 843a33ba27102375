"""Logging for every dafsl module: one ``logging`` logger per stage or module, one switch.

Library code logs through :func:`get_logger` (``dafsl.<name>``) and never prints;
:func:`configure` (called once by each command-line entry point) attaches one handler
that writes ``[<name>] message`` lines to stderr, and ``--quiet`` raises the level to
WARNING. Progress bars stay tqdm: :func:`progress` shows them only while the ``dafsl``
logger is at INFO, so ``--quiet`` silences bars and messages with one setting.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable

from tqdm.auto import tqdm

ROOT = "dafsl"


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name = record.name[len(ROOT) + 1:] if record.name.startswith(ROOT + ".") else record.name
        msg = record.getMessage()
        prefix = f"[{name}] " if name and name != ROOT else ""
        if record.levelno >= logging.WARNING:
            prefix += f"{record.levelname.lower()}: "
        return prefix + msg


class _TqdmHandler(logging.StreamHandler):
    """Writes through ``tqdm.write`` so messages do not break an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def get_logger(name: str) -> logging.Logger:
    """The logger ``dafsl.<name>`` (e.g. ``get_logger("augmenter")``)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def configure(quiet: bool = False, stream=None) -> None:
    """Install the one ``dafsl`` handler (idempotent); ``quiet`` -> WARNING, else INFO."""
    root = logging.getLogger(ROOT)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_dafsl", False):
            root.removeHandler(h)
    handler = _TqdmHandler(stream or sys.stderr)
    handler._dafsl = True
    handler.setFormatter(_Format())
    root.addHandler(handler)
    root.propagate = False


def verbose() -> bool:
    """True when INFO messages (and progress bars) are shown."""
    return logging.getLogger(ROOT).isEnabledFor(logging.INFO)


def progress(iterable: Iterable | None = None, **kwargs):
    """``tqdm`` that is disabled unless the ``dafsl`` logger shows INFO."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not verbose(), **kwargs)
