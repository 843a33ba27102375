"""YAML configuration: defaults, config files, ``--set a.b=value`` overrides.

``configs/default.yaml`` is the schema: every key a run may use appears there. A
config file (e.g. ``configs/smoke.yaml``) and ``--set`` overrides are merged on top;
a key that is not in the defaults is an error, never a silent no-op. Values are then
checked against :mod:`dafsl.config_schema` (choices, ranges, cross-key rules), once.

The loaded config is frozen (:class:`FrozenDict` / :class:`FrozenList` at every level):
any assignment into it raises ``TypeError``. It dumps to JSON and YAML like a plain
dict; ``thaw(cfg)`` (or ``copy.deepcopy(cfg)``) gives a mutable plain copy for code that
derives a modified config. The resolved config is saved as ``config.yaml`` in every
run directory.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from dafsl.config_schema import MIXED_TYPES, validate
from dafsl.errors import DafslError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or bad YAML is a one-line :class:`DafslError`."""
    path = Path(path)
    if not path.is_file():
        raise DafslError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DafslError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DafslError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------- frozen containers
_FROZEN_MSG = ("the config is frozen after load_config; derive a changed copy with "
               "dafsl.config.thaw(cfg)")


def _refuse(self, *args, **kwargs):
    raise TypeError(_FROZEN_MSG)


class FrozenDict(dict):
    """A ``dict`` that refuses every change. ``copy.deepcopy`` gives a plain mutable dict."""

    __setitem__ = __delitem__ = __ior__ = _refuse
    update = pop = popitem = clear = setdefault = _refuse

    def __copy__(self) -> dict:
        return dict(self)

    def __deepcopy__(self, memo: dict) -> dict:
        return thaw(self)

    def __reduce__(self):  # pickles (e.g. into DataLoader workers) as a FrozenDict again
        return FrozenDict, (dict(self),)


class FrozenList(list):
    """A ``list`` that refuses every change. ``copy.deepcopy`` gives a plain mutable list."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __copy__(self) -> list:
        return list(self)

    def __deepcopy__(self, memo: dict) -> list:
        return thaw(self)

    def __reduce__(self):
        return FrozenList, (list(self),)


yaml.add_representer(FrozenDict, yaml.SafeDumper.represent_dict, Dumper=yaml.SafeDumper)
yaml.add_representer(FrozenList, yaml.SafeDumper.represent_list, Dumper=yaml.SafeDumper)


def freeze(obj: Any) -> Any:
    """Frozen copy of a config tree (dicts and lists at every level)."""
    if isinstance(obj, dict):
        return FrozenDict({k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return FrozenList(freeze(v) for v in obj)
    return obj


def thaw(obj: Any) -> Any:
    """Mutable deep copy of a (frozen) config tree: plain dicts and lists at every level."""
    if isinstance(obj, dict):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [thaw(v) for v in obj]
    return copy.deepcopy(obj)


def plain(obj: Any) -> Any:
    """``obj`` with every frozen container inside plain dicts/lists/tuples thawed; other
    objects (tensors, state dicts) kept as they are. For ``torch.save``, whose
    ``weights_only`` loader accepts plain containers only."""
    if isinstance(obj, (FrozenDict, FrozenList)):
        return thaw(obj)
    if type(obj) is dict:
        return {k: plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(plain(v) for v in obj)
    return obj


# ---------------------------------------------------------------- merging
_INF = ("inf", "+inf", ".inf", "+.inf", "infinity", "+infinity")


def _check_type(key: str, default: Any, value: Any, origin: str) -> Any:
    """Accept ``value`` for ``key`` if it fits the default's type (None defaults take anything)."""
    if key in MIXED_TYPES:  # the schema's rule decides (e.g. "match" or a number)
        return value
    if default is None or value is None:
        return value
    if isinstance(default, float) and isinstance(value, str) and value.strip().lower() in _INF:
        return math.inf  # `--set similarity.p=inf`; the schema says which keys allow it
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise DafslError(f"{origin}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DafslError(f"{origin}: {key} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise DafslError(f"{origin}: {key} must be an integer, got {value!r}")
            return int(value)
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise DafslError(f"{origin}: {key} must be a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise DafslError(f"{origin}: {key} must be a list, got {value!r}")
    if isinstance(default, dict) and not isinstance(value, dict):
        raise DafslError(f"{origin}: {key} must be a mapping, got {value!r}")
    return value


def merge(base: dict, update: dict, origin: str, prefix: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys raise :class:`DafslError`."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        full = f"{prefix}{key}"
        if key not in out:
            raise DafslError(f"{origin}: unknown config key '{full}'")
        if isinstance(out[key], dict) and isinstance(value, dict) and not _is_open(out[key]):
            out[key] = merge(out[key], value, origin, prefix=f"{full}.")
        else:
            out[key] = _check_type(full, out[key], value, origin)
    return out


def _is_open(section: dict) -> bool:
    # A mapping marked ``_open: true`` in the defaults takes any keys (e.g. generator params).
    return bool(section.get("_open", False))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` → (["a", "b"], 3); the value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise DafslError(f"--set {item}: expected KEY=VALUE")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise DafslError(f"--set {item}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise DafslError(f"--set {item}: value is not valid YAML") from None
    return key.split("."), value


def apply_override(cfg: dict, path: list[str], value: Any) -> None:
    """Set ``cfg[path...] = value`` in place, refusing keys that do not exist."""
    node = cfg
    for i, part in enumerate(path[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise DafslError(f"--set: unknown config key '{'.'.join(path[: i + 1])}'")
        node = node[part]
    last = path[-1]
    full = ".".join(path)
    if not isinstance(node, dict) or (last not in node and not _is_open(node)):
        raise DafslError(f"--set: unknown config key '{full}'")
    node[last] = _check_type(full, node.get(last), value, "--set") if last in node else value


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> FrozenDict:
    """Resolve defaults ← config file ← ``--set`` overrides, validate the values
    (:func:`dafsl.config_schema.validate`) and return the config frozen."""
    cfg = read_yaml(DEFAULT_CONFIG)
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG.resolve():
        cfg = merge(cfg, read_yaml(path), origin=str(path))
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(cfg, keys, value)
    return freeze(validate(cfg))


def dump_config(cfg: dict, path: str | Path) -> None:
    """Write the resolved config as YAML (key order kept)."""
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
