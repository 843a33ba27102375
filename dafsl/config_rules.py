"""The rule types of the config schema (:mod:`dafsl.config_schema`): each is a predicate
on one value with ``allows`` (what passes, in words) and ``bad`` (values that must fail,
fed to every key by the tests). A leaf module: it imports nothing from ``dafsl``."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

class Rule(ABC):
    """A predicate on one value. ``allows`` says in words what passes; ``bad`` lists
    values that must fail (the tests feed each to its key)."""

    allows = "?"
    bad: tuple = ()

    @abstractmethod
    def ok(self, value: Any) -> bool:
        """True when ``value`` passes."""

    def normalise(self, value: Any) -> Any:
        return value


class Choice(Rule):
    def __init__(self, *choices: str):
        self.choices = choices
        self.allows = "one of " + ", ".join(choices)
        self.bad = (choices[0][:-1] or "x",)  # a typo: the first choice, last letter dropped

    def ok(self, value):
        return isinstance(value, str) and value in self.choices


class Number(Rule):
    """A real (or integer) number in a range; ``lo_open``/``hi_open`` exclude the bound."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, integer=False, inf=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.integer, self.inf = integer, inf
        kind = "an integer" if integer else "a number"
        if lo is not None and hi is not None:
            self.allows = f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            self.allows = f"{kind} {'>' if lo_open else '>='} {lo}"
        else:
            self.allows = kind
        if inf:
            self.allows += " or inf"
        bad = []
        if lo is not None:
            bad.append(lo if lo_open else lo - 1)
        if hi is not None:
            bad.append(hi if hi_open else hi + 1)
        self.bad = tuple(bad)

    def ok(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if math.isinf(value):
            return self.inf and value > 0
        if self.integer and not float(value).is_integer():
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def normalise(self, value):
        return int(value) if self.integer else value


def Int(lo: int | None = None) -> Number:
    return Number(lo=lo, integer=True)


POSITIVE = Number(lo=0, lo_open=True)          # learning rates, temperatures, factors
NON_NEGATIVE = Number(lo=0)
UNIT = Number(0, 1)                            # probabilities, thresholds, IoUs, weights
COUNT = Int(1)                                 # epochs, batch sizes, widths
COUNT0 = Int(0)                                # 0 = off / all / torch's default


class Nullable(Rule):
    def __init__(self, rule: Rule):
        self.rule, self.allows, self.bad = rule, f"null or {rule.allows}", rule.bad

    def ok(self, value):
        return value is None or self.rule.ok(value)

    def normalise(self, value):
        return None if value is None else self.rule.normalise(value)


class Text(Rule):
    allows, bad = "a non-empty string", ("",)

    def ok(self, value):
        return isinstance(value, str) and value.strip() != ""


class PowerOfTwo(Rule):
    def __init__(self, lo: int):
        self.lo, self.allows, self.bad = lo, f"a power of two >= {lo}", (lo + lo // 2, lo // 2)

    def ok(self, value):
        return Int(self.lo).ok(value) and not int(value) & (int(value) - 1)


class ListOf(Rule):
    """A list of ``item`` values: ``length`` exactly, else at least ``min_len``;
    ``ordered``: each item after the previous one in ``order`` (no repeats)."""

    def __init__(self, item: Rule, min_len: int = 1, length: int | None = None,
                 order: tuple | None = None):
        self.item, self.min_len, self.length, self.order = item, min_len, length, order
        what = (f"a list of {length}" if length is not None
                else "a non-empty list of" if min_len == 1 else "a list of")
        self.allows = f"{what} {_plural(item.allows)}"
        if order is not None:
            self.allows += " in that order, no repeats"
        bad = [[item.bad[0]]] if item.bad else []
        if length is not None:
            bad.append([])
        elif min_len >= 1:
            bad.append([])
        if order is not None:
            bad.append(list(reversed(order[:2])))
        self.bad = tuple(bad)

    def ok(self, value):
        if not isinstance(value, list) or not all(self.item.ok(v) for v in value):
            return False
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_len:
            return False
        if self.order is not None:
            idx = [self.order.index(v) for v in value]
            return all(a < b for a, b in zip(idx, idx[1:]))
        return True

    def normalise(self, value):
        return [self.item.normalise(v) for v in value]


class DenoughFill(Rule):
    allows = "match, or a number of faces >= 0"
    bad = ("matc", -1, 2.5)

    def ok(self, value):
        return value == "match" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


class DiffAugment(Rule):
    """Comma-separated names out of ``policies`` ("" = off)."""
    bad = ("colour", "color,translate")

    def __init__(self, policies: tuple[str, ...]):
        self.policies = tuple(policies)
        self.allows = f"comma-separated names from {', '.join(self.policies)}, or \"\" (off)"

    def ok(self, value):
        return isinstance(value, str) and all(
            p.strip() in self.policies for p in value.split(",") if p.strip())


class Source(Rule):
    """One of ``choices`` or a checkpoint path (a bare word is a typo, not a file name)."""

    def __init__(self, *choices: str):
        self.choices = choices
        self.allows = f"one of {', '.join(choices)}, or a checkpoint path"
        self.bad = ("imagnet", "")

    def ok(self, value):
        if not isinstance(value, str) or not value.strip():
            return False
        from pathlib import Path

        path = Path(value)
        return value in self.choices or "/" in value or path.suffix != "" or path.exists()


class TimmModel(Rule):
    """A timm model name (``prefix`` + name), or one of ``builtin`` (built by dafsl)."""

    def __init__(self, builtin: tuple, prefix: str = ""):
        self.builtin, self.prefix = builtin, prefix
        names = ", ".join(builtin)
        self.allows = (f"{names} or {prefix}<timm model name>" if prefix
                       else f"a timm model name or {names}")
        self.bad = tuple(dict.fromkeys(("resnt18", f"{prefix}resnt18")))

    def ok(self, value):
        if not isinstance(value, str):
            return False
        if value in self.builtin:
            return True
        if self.prefix and not value.startswith(self.prefix):
            return False
        import timm

        return timm.is_model(value[len(self.prefix):])


def _plural(allows: str) -> str:
    for one, many in (("an integer", "integers"), ("a number", "numbers"),
                      ("a non-empty string", "non-empty strings"),
                      ("a non-empty list", "non-empty lists")):
        if allows.startswith(one):
            return many + allows[len(one):]
    return allows.replace("one of ", "names from ", 1)


class Transforms(Rule):
    """A non-empty list of albumentations transforms, each ``{name: <transform class>,
    <its keyword arguments>}`` (DDGSD's distortion; lists become tuples). albumentations is
    imported lazily, only to check the list."""

    allows = "a non-empty list of {name: <albumentations transform>, <its arguments>}"
    bad = ([], [{"name": "HorizontalFlipp"}])

    def ok(self, value):
        if not isinstance(value, (list, tuple)) or not value:
            return False
        import warnings

        import albumentations as A

        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return False
            cls = getattr(A, item["name"], None)
            if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
                return False
            kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
                      for k, v in item.items() if k != "name"}
            try:
                with warnings.catch_warnings():  # albumentations only warns on unknown arguments
                    warnings.simplefilter("error", UserWarning)
                    cls(**kwargs)
            except Exception:
                return False
        return True
