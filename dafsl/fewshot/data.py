"""Few-shot data: character sets (the embedded ``glyphs`` set or the real Omniglot) and episodes.

:func:`load_characters` turns a manifest split into a :class:`CharacterSet` held in memory
(float images, ink = 1.0 on background 0.0). The ``glyphs`` set is rendered once per
(params, image size, renderer source) and cached as one ``.npz`` under
``<cache>/data/<name>-<key>/``; the real Omniglot is read from its official folder layout.

:func:`sample_episode` draws one N-way K-shot episode; :class:`EpisodeSampler` yields a
fixed, seeded sequence of them (episode ``i`` depends only on ``seed``, the epoch and ``i``,
so a resumed run or a test set of 1,000 episodes is reproducible)::

    train = load_characters("glyphs", "train")
    for ep in EpisodeSampler(train.labels, way=5, shot=1, query=15, n_episodes=2000, seed=0):
        support = train.images[ep.support_idx]            # (way*shot, 1, S, S)
        query, target = train.images[ep.query_idx], ep.query_labels
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from dafsl.data import cache_root
from dafsl.errors import DafslError
from dafsl.log import get_logger
from dafsl.manifest import Manifest, load_manifest

log = get_logger("fewshot")
SETS = ("background", "evaluation")
OMNIGLOT_READER = "invert+area-resize v1"  # part of the Omniglot cache key: bump when reading changes


@dataclass(frozen=True, eq=False)
class CharacterSet:
    """One split of a character set, in memory.

    ``images`` float32 (N, 1, S, S) in [0, 1], ink 1.0; ``labels`` int64 (N,) in 0..C-1;
    ``classes`` the C names ``"alphabet/character"``; ``drawers`` int64 (N,), the drawing's
    index within its character (0..19); ``origin`` names the split in error messages.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    drawers: torch.Tensor
    origin: str = "character set"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_characters(manifest: str | Path | Manifest, split: str, *, image_size: int = 28,
                    cache_dir: str | Path | None = None) -> CharacterSet:
    """Load ``split`` of a character-set manifest (a name in ``data_manifests/`` or a path).

    Generator ``glyphs`` manifests are rendered (and cached); ``omniglot`` manifests are read
    from ``source.root``. Splits are ``{"set": "background" | "evaluation", "alphabets":
    [start, stop]}``: alphabets by index (sorted folder names for Omniglot), stop null = all.
    """
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    spec = m.split(split)
    where = f"{m.path} split '{split}'"
    if spec.get("set") not in SETS:
        raise DafslError(f"{where}: 'set' must be one of {', '.join(SETS)}, got {spec.get('set')!r}")
    rng = spec.get("alphabets", [0, None])
    if not (isinstance(rng, list) and len(rng) == 2 and isinstance(rng[0], int)
            and (rng[1] is None or isinstance(rng[1], int))):
        raise DafslError(f"{where}: 'alphabets' must be [start, stop] (stop may be null), got {rng!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise DafslError(f"{where}: image_size must be an int >= 8, got {image_size!r}")
    src = m.source
    if src["type"] == "generator" and src.get("generator") == "glyphs":
        images, labels, drawers, classes = _glyph_split(m, spec, image_size, cache_dir)
    elif src["type"] == "omniglot":
        images, labels, drawers, classes = _omniglot_split(m, spec, image_size, cache_dir)
    else:
        raise DafslError(f"{m.path}: not a character set (source type {src['type']!r}); "
                         f"use a 'glyphs' generator or an 'omniglot' manifest")
    if not classes:
        raise DafslError(f"{where}: selects no characters (alphabets {rng})")
    return CharacterSet(images=torch.from_numpy(images).float().div_(255.0).unsqueeze(1),
                        labels=torch.from_numpy(labels).long(), classes=tuple(classes),
                        drawers=torch.from_numpy(drawers).long(), origin=f"{m.name}/{split}")


# ------------------------------------------------------------------ glyphs
def glyph_cache_path(m: Manifest, image_size: int, cache_dir: str | Path | None = None) -> Path:
    """Where the rendered set lives: keyed by the generator params and the renderer's source."""
    from dafsl.synth import glyphs

    params = glyphs.merge_params(m.source.get("params"), str(m.path))
    key = json.dumps(params, sort_keys=True) + inspect.getsource(glyphs)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = cache_root(str(cache_dir) if cache_dir is not None else None)
    return root / "data" / f"{m.name}-{digest}" / f"{image_size}px.npz"


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        log.warning("%s: unreadable cache file, building it again", path)
        return None


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: readers see no file or the whole file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _glyph_arrays(m: Manifest, image_size: int, cache_dir) -> dict[str, np.ndarray]:
    from dafsl.synth import glyphs

    path = glyph_cache_path(m, image_size, cache_dir)
    arrays = _read_npz(path)
    if arrays is None:
        log.info("rendering %s at %d px into %s", m.name, image_size, path.parent)
        arrays = glyphs.render_set(m.source.get("params"), image_size)
        arrays["classes"] = np.array(arrays["classes"])
        _write_npz(path, arrays)
    return arrays


def _glyph_split(m: Manifest, spec: dict, image_size: int, cache_dir):
    a = _glyph_arrays(m, image_size, cache_dir)
    start, stop = spec.get("alphabets", [0, None])
    alpha = a["class_alphabet"]
    keep = (a["class_set"] == SETS.index(spec["set"])) & (alpha >= start)
    if stop is not None:
        keep &= alpha < stop
    kept = np.flatnonzero(keep)
    remap = np.full(len(keep), -1, np.int64)
    remap[kept] = np.arange(len(kept))
    rows = np.flatnonzero(keep[a["labels"]])
    return (a["images"][rows], remap[a["labels"][rows]], a["drawers"][rows].astype(np.int64),
            [str(c) for c in a["classes"][kept]])


# ------------------------------------------------------------------ Omniglot
def omniglot_root(m: Manifest) -> Path:
    raw = m.source.get("root", "")
    path = m.resolve(raw)
    if "$" in str(path):
        var = str(path)[str(path).index("$"):].split("/")[0]
        raise DafslError(f"{m.path}: source.root {raw!r} uses {var}, which is not set; set it to "
                         f"the folder that holds images_background/ and images_evaluation/")
    if not path.is_dir():
        raise DafslError(f"{path}: Omniglot root folder not found (source.root of {m.path})")
    return path


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _omniglot_listing(m: Manifest, spec: dict) -> tuple[Path, list[tuple[str, list[Path]]]]:
    """The split's characters and their drawings, validated (cheap: no image is decoded)."""
    folder = omniglot_root(m) / f"images_{spec['set']}"
    if not folder.is_dir():
        raise DafslError(f"{folder}: Omniglot split folder not found")
    start, stop = spec.get("alphabets", [0, None])
    listing = []
    for alphabet in _entries(folder)[start:stop]:
        if not alphabet.is_dir():
            raise DafslError(f"{alphabet}: expected an alphabet folder, found a file")
        characters = _entries(alphabet)
        if not characters:
            raise DafslError(f"{alphabet}: alphabet folder has no character folders")
        for char in characters:
            if not char.is_dir():
                raise DafslError(f"{char}: expected a character folder, found a file")
            files = _entries(char)
            if not files:
                raise DafslError(f"{char}: character folder has no images")
            for f in files:
                if f.is_dir() or f.suffix.lower() != ".png":
                    raise DafslError(f"{f}: not a PNG image (a character folder holds only "
                                     f".png drawings)")
            listing.append((f"{alphabet.name}/{char.name}", files))
    return folder, listing


def _omniglot_split(m: Manifest, spec: dict, image_size: int, cache_dir):
    """Decoded once per (file listing with sizes and mtimes, image size), then cached."""
    folder, listing = _omniglot_listing(m, spec)
    stamp = [str(folder.resolve()), image_size, OMNIGLOT_READER]
    for _, files in listing:
        for f in files:
            st = f.stat()
            stamp.append((str(f.relative_to(folder)), st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    path = cache_root(str(cache_dir) if cache_dir is not None else None) / "data" / \
        f"{m.name}-{digest}" / f"{spec['set']}-{image_size}px.npz"
    arrays = _read_npz(path)
    if arrays is None:
        if not listing:
            return (np.zeros((0, image_size, image_size), np.uint8), np.zeros(0, np.int64),
                    np.zeros(0, np.int64), [])
        images, labels, drawers = [], [], []
        for c, (_, files) in enumerate(listing):
            for k, f in enumerate(files):
                images.append(_read_drawing(f, image_size))
                labels.append(c)
                drawers.append(k)
        arrays = {"images": np.stack(images), "labels": np.array(labels, np.int64),
                  "drawers": np.array(drawers, np.int64),
                  "classes": np.array([name for name, _ in listing])}
        _write_npz(path, arrays)
    return arrays["images"], arrays["labels"], arrays["drawers"], [str(c) for c in arrays["classes"]]


def _read_drawing(path: Path, image_size: int) -> np.ndarray:
    """uint8 (S, S), ink 255: Omniglot PNGs are black ink on white, so they are inverted."""
    raw = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE) if raw.size else None
    if img is None:
        raise DafslError(f"{path}: cannot decode PNG (corrupt or not an image)")
    img = 255 - img
    if img.shape != (image_size, image_size):
        img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return img


# ------------------------------------------------------------------ episodes
@dataclass(frozen=True, eq=False)
class Episode:
    """Indices into a set and labels renumbered 0..way-1, class by class.

    ``support_idx``/``support_labels``: int64 (way*shot,); ``query_idx``/``query_labels``:
    int64 (way*query,). Label ``i`` is the ``i``-th class drawn for this episode.
    """

    support_idx: torch.Tensor
    support_labels: torch.Tensor
    query_idx: torch.Tensor
    query_labels: torch.Tensor


def _class_index(labels: torch.Tensor, way: int, shot: int, query: int, origin: str):
    """(sorted indices, offsets, counts) per class; checks the set can hold such episodes."""
    if way < 1 or shot < 1 or query < 0:
        raise DafslError(f"{origin}: episodes need way >= 1, shot >= 1, query >= 0, "
                         f"got way={way} shot={shot} query={query}")
    labels = torch.as_tensor(labels).long()
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    if n_classes < way:
        raise DafslError(f"{origin} has {n_classes} classes, fewer than way={way}")
    counts = torch.bincount(labels, minlength=n_classes)
    small = int(torch.argmin(counts))
    if counts[small] < shot + query:
        raise DafslError(f"{origin}: class {small} has {int(counts[small])} images, fewer than "
                         f"shot+query={shot + query}")
    order = torch.argsort(labels, stable=True)
    offsets = torch.cumsum(counts, 0) - counts
    return order, offsets, counts


def _draw(index, way: int, shot: int, query: int, generator: torch.Generator) -> Episode:
    order, offsets, counts = index
    chosen = torch.randperm(len(counts), generator=generator)[:way]
    support, queries = [], []
    for c in chosen.tolist():
        pick = torch.randperm(int(counts[c]), generator=generator)[:shot + query]
        idx = order[offsets[c] + pick]
        support.append(idx[:shot])
        queries.append(idx[shot:])
    return Episode(torch.cat(support), torch.arange(way).repeat_interleave(shot),
                   torch.cat(queries), torch.arange(way).repeat_interleave(query))


def sample_episode(labels: torch.Tensor, way: int, shot: int, query: int,
                   generator: torch.Generator, *, origin: str = "the set") -> Episode:
    """One episode: ``way`` classes, ``shot`` support and ``query`` query images each,
    drawn with ``generator`` (deterministic for its seed). ``labels`` int64 (N,)."""
    return _draw(_class_index(labels, way, shot, query, origin), way, shot, query, generator)


class EpisodeSampler(torch.utils.data.Sampler):
    """``n_episodes`` seeded episodes; episode ``i`` is a function of (seed, epoch, i) only.

    ``set_epoch(e)`` gives fresh episodes per epoch (epoch 0 by default); ``sampler[i]``
    returns episode ``i`` without drawing the ones before it (for resuming).
    """

    def __init__(self, labels: torch.Tensor, way: int, shot: int, query: int, n_episodes: int,
                 seed: int = 0, *, origin: str = "the set"):
        if n_episodes < 1 or seed < 0:
            raise DafslError(f"{origin}: episodes need n_episodes >= 1 and seed >= 0, "
                             f"got {n_episodes} and {seed}")
        self.way, self.shot, self.query = way, shot, query
        self.n_episodes, self.seed, self.epoch = int(n_episodes), int(seed), 0
        self._index = _class_index(labels, way, shot, query, origin)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_episodes

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < self.n_episodes:
            raise IndexError(i)
        state = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(2, np.uint32)
        g = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
        return _draw(self._index, self.way, self.shot, self.query, g)

    def __iter__(self):
        for i in range(self.n_episodes):
            yield self[i]
