"""Shared fixtures: every test renders into a per-session temporary cache, so tests
never touch the user's ~/.cache and never download anything."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def dafsl_cache(tmp_path_factory):
    import os

    path = tmp_path_factory.mktemp("dafsl-cache")
    old = os.environ.get("DAFSL_CACHE")
    os.environ["DAFSL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DAFSL_CACHE", None)
    else:
        os.environ["DAFSL_CACHE"] = old
