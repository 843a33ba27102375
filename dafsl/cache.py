"""A cache that survives concurrent runs and kills: file locks and checksums.

Everything dafsl caches (rendered dataset splits, zoo entries) is written into a temp
directory that is renamed into place, so a reader never sees half of it. Two more
guarantees live here:

* :func:`file_lock` — an exclusive ``fcntl`` lock on ``<path>.lock``. Two runs started
  at once on an empty cache both ask for the lock before building; the first builds,
  the second waits, then finds the entry built and reads it. The lock is released by
  the kernel when its holder dies, so a killed build never blocks the next run.
* :func:`file_digests` / :func:`verify_digests` — the SHA-256 of every file, recorded
  when an entry is written and checked when it is read. A truncated or corrupted file
  (a disk filled up, a copy interrupted, a byte flipped) is detected and the entry is
  rebuilt instead of failing later with an obscure decoding error.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path

from dafsl.log import get_logger

log = get_logger("cache")


@contextlib.contextmanager
def file_lock(path: str | Path, what: str = ""):
    """Hold an exclusive lock on ``<path>.lock`` for the ``with`` block (blocking)."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning(f"waiting for another process building {what or Path(path).name}")
            t0 = time.perf_counter()
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info(f"lock acquired after {time.perf_counter() - t0:.0f}s")
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(root: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (sorted, excluding names)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in exclude}


def verify_digests(root: str | Path, digests: dict[str, str]) -> str | None:
    """``None`` when every recorded file exists with its recorded digest, else the first
    problem as text (``"images/00000001.png: checksum mismatch"``)."""
    root = Path(root)
    for rel, digest in digests.items():
        p = root / rel
        if not p.is_file():
            return f"{p}: missing"
        if sha256_file(p) != digest:
            return f"{p}: checksum mismatch (truncated or corrupted)"
    return None
