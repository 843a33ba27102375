"""User-facing errors.

Every problem caused by input (a file, a record, a config value) is raised as
:class:`DafslError` with a one-line message that names the culprit. Command-line
entry points wrap ``main`` with :func:`exit_on_error`, which prints that line and
exits with status 2, without a traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

EXIT_BAD_INPUT = 2


class DafslError(Exception):
    """Bad input: the message is one line naming the file/record and what is wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def exit_on_error(fn: F) -> F:
    """Decorate a CLI ``main``: a :class:`DafslError` becomes one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DafslError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]
