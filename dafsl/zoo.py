"""The offline model zoo: source checkpoints dafsl trains itself on the *source* dataset.

This machine cannot download ImageNet weights, so ``--kd pretrained`` needs a source
that can be made locally: each zoo entry trains a model of the stage's architecture on
the non-face ``shapes`` set (``data.source_manifest``) and caches it under
``<cache>/zoo/<name>-<key>/`` (``checkpoint.pt`` + ``meta.json``). The key hashes the
config the entry depends on and the builder's code, so a changed architecture rebuilds.

    python -m dafsl.zoo list             entries, and whether each is built for this config
    python -m dafsl.zoo build NAME       build (or confirm) one entry now

The build time is recorded in ``meta.json`` (``build_time_s``) and never counted in a
transfer run's training time: like ImageNet pretraining in the paper, it is paid once.

Registering an entry: add it to its stage's ``zoo`` in :data:`dafsl.stages.STAGES`
(``name → "module:function"``). The function is ``build(cfg, out_dir, device) -> meta``
and writes
``out_dir/"checkpoint.pt"`` via :func:`dafsl.runs.save_checkpoint`; its meta must hold
``source_dataset`` and ``descriptor`` (:func:`dafsl.similarity.describe_split`). The
builder's module may define ``entry_key(cfg) -> dict`` (the config the checkpoint depends
on); without it the whole config except paths/device is hashed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from dafsl.config import DEFAULT_CONFIG, load_config, thaw
from dafsl.data import cache_root
from dafsl.errors import DafslError, exit_on_error
from dafsl.log import configure, get_logger
from dafsl.cache import file_lock, sha256_file
from dafsl.runs import atomic_write_json
from dafsl.stages import resolve_device, zoo_entries

ENTRIES: dict[str, str] = zoo_entries()
#: (entry, build seconds) of every entry built in this process, in order; the runner
#: reports the builds a stage triggered from it (zoo build time is never training time)
BUILDS: list[tuple[str, float]] = []
log = get_logger("zoo")


def zoo_dir(cfg: dict) -> Path:
    """``zoo.dir`` if set, else ``<cache_root(data.cache_dir)>/zoo``."""
    configured = cfg.get("zoo", {}).get("dir")
    if configured:
        return Path(configured).expanduser()
    return cache_root(cfg["data"]["cache_dir"]) / "zoo"


def _builder(name: str):
    if name not in ENTRIES:
        raise DafslError(f"zoo: unknown entry '{name}' (known: {', '.join(sorted(ENTRIES))})")
    module_name, _, fn_name = ENTRIES[name].partition(":")
    module = importlib.import_module(module_name)
    return module, getattr(module, fn_name)


def entry_key(name: str, cfg: dict) -> str:
    """12-hex key of entry ``name`` under ``cfg``: its relevant config + builder code."""
    module, fn = _builder(name)
    if hasattr(module, "entry_key"):
        relevant = module.entry_key(cfg)
    else:
        relevant = thaw(cfg)  # a mutable copy: the loaded config is frozen
        relevant.pop("out_root", None)
        relevant.pop("device", None)
        relevant.get("data", {}).pop("cache_dir", None)
        relevant.get("zoo", {}).pop("dir", None)
    blob = json.dumps({"name": name, "config": relevant, "code": inspect.getsource(module)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def entry_dir(name: str, cfg: dict) -> Path:
    return zoo_dir(cfg) / f"{name}-{entry_key(name, cfg)}"


def get(name: str, cfg: dict, device: torch.device | str | None = None) -> tuple[Path, dict]:
    """``(checkpoint path, meta)`` of entry ``name``, building it first if needed.

    ``meta["built_now"]`` says whether this call built it. ``device``: where a build
    trains (default: the config's ``device``).
    """
    out = entry_dir(name, cfg)
    cached = _cached(out)
    if cached is not None:
        return cached
    # one process builds, a concurrent one waits for the lock and then reads the result
    with file_lock(out, f"zoo entry {name}"):
        cached = _cached(out)
        if cached is not None:
            return cached
        return _build(name, cfg, out, device)


def _cached(out: Path) -> tuple[Path, dict] | None:
    """The entry in ``out`` if complete and its checkpoint matches the SHA-256 recorded at
    build time; ``None`` (build again) when absent, incomplete or corrupted."""
    meta_path, ckpt = out / "meta.json", out / "checkpoint.pt"
    if not (meta_path.is_file() and ckpt.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise DafslError(f"{meta_path}: invalid JSON; delete {out} to rebuild") from None
    digest = meta.get("sha256")
    if digest is None:  # built by an older dafsl: record the checksum on first use
        meta["sha256"] = sha256_file(ckpt)
        atomic_write_json(meta_path, meta)
    elif sha256_file(ckpt) != digest:
        log.warning(f"{ckpt}: checksum mismatch (truncated or corrupted); rebuilding {out.name}")
        return None
    return ckpt, {**meta, "built_now": False}


def _build(name: str, cfg: dict, out: Path, device) -> tuple[Path, dict]:
    _, build = _builder(name)
    if out.exists():  # incomplete (a file deleted by hand): rebuild from scratch
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp dir renamed into place, so an interrupted build never looks cached.
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        log.info(f"building {name} (first use; cached in {out})")
        t0 = time.perf_counter()
        device = resolve_device(cfg["device"]) if device is None else torch.device(device)
        meta = dict(build(cfg, tmp, device))
        missing = {"source_dataset", "descriptor"} - meta.keys()
        if missing or not (tmp / "checkpoint.pt").is_file():
            raise DafslError(f"zoo: builder of '{name}' did not produce "
                             f"{sorted(missing) or 'checkpoint.pt'}")
        meta.update(name=name, key=out.name.rsplit("-", 1)[1],
                    build_time_s=round(time.perf_counter() - t0, 2),
                    sha256=sha256_file(tmp / "checkpoint.pt"),
                    created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_json(tmp / "meta.json", meta)
        try:
            tmp.rename(out)
        except OSError:
            if not (out / "meta.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished the same entry first; keep theirs
            return _cached(out) or _build(name, cfg, out, device)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(f"built {name} in {meta['build_time_s']:.1f}s")
    BUILDS.append((name, float(meta["build_time_s"])))
    return out / "checkpoint.pt", {**meta, "built_now": True}


def list_entries(cfg: dict) -> list[dict]:
    """Every registered entry with its cache path and, when built, its meta."""
    rows = []
    for name in ENTRIES:
        d = entry_dir(name, cfg)
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").is_file() else None
        rows.append({"name": name, "builder": ENTRIES[name], "path": str(d),
                     "built": meta is not None,
                     **({k: meta[k] for k in ("source_dataset", "build_time_s", "created")
                         if k in meta} if meta else {})})
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dafsl.zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("list", "build"))
    p.add_argument("name", nargs="?", help="entry to build")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    return p


@exit_on_error
def main(argv: Sequence[str] | None = None) -> list[dict] | dict:
    args = get_args_parser().parse_args(argv)
    configure(args.quiet)
    cfg = load_config(args.config, args.overrides)
    if args.command == "list":
        rows = list_entries(cfg)
        for r in rows:
            state = (f"built {r['created']} in {r['build_time_s']:.0f}s from {r['source_dataset']}"
                     if r["built"] else "not built")
            print(f"{r['name']:<20} {state:<52} {r['path']}")
        return rows
    if not args.name:
        raise DafslError("zoo build: name the entry to build (see `python -m dafsl.zoo list`)")
    path, meta = get(args.name, cfg)
    shown = {k: v for k, v in meta.items() if k != "descriptor"}
    print(json.dumps({"checkpoint": str(path), **shown}))
    return meta


if __name__ == "__main__":
    main()
