"""The package's shape: no import cycle (function-level imports included), no stage
importing the orchestrator, one registry for stages, modes and zoo entries, one summary
schema for every stage."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import dafsl
from dafsl import stages, zoo
from dafsl.config import CONFIG_DIR

PACKAGE = Path(dafsl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> dafsl modules it imports anywhere in its body (functions included)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text())
        # code under `if __name__ == "__main__":` runs as another module (__main__)
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dafsl")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.startswith("dafsl"):
                for a in node.names:  # `from dafsl import zoo` imports the module dafsl.zoo
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in files else node.module)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "dafsl.pipeline" in graph  # the parser saw the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_stage_imports_the_orchestrator():
    graph = import_graph()
    for name, deps in graph.items():
        if name.split(".")[1:2] and name.split(".")[1] in stages.STAGES:
            assert "dafsl.pipeline" not in deps and "dafsl.runner" not in deps, name


def test_one_registry_for_stages_modes_and_zoo_entries():
    assert tuple(stages.STAGES) == ("detector", "augmenter", "classifier")
    assert stages.MODES == (*stages.CONCRETE_MODES, "auto")
    assert zoo.ENTRIES == stages.zoo_entries()
    for stage in stages.STAGES.values():
        assert callable(stage.function())
        for entry in stage.zoo:
            module, _, fn = zoo.ENTRIES[entry].partition(":")
            assert callable(getattr(__import__(module, fromlist=[fn]), fn))


def test_zoo_needs_follow_mode_and_source():
    from dafsl.config import load_config

    cfg = load_config()
    det, aug, cls = (stages.STAGES[s] for s in ("detector", "augmenter", "classifier"))
    assert det.zoo_needs(cfg, "vanilla") == [] and det.zoo_needs(cfg, "fixed") == ["detector-shapes"]
    assert aug.zoo_needs(cfg, "vanilla") == list(aug.always_needs)
    assert "augmenter-gan" in aug.zoo_needs(cfg, "pretrained")
    assert cls.zoo_needs(cfg, "pretrained") == []  # classifier.source: detector (stage 1's)


def test_every_stage_writes_the_same_summary_schema(tmp_path):
    from dafsl.pipeline import main

    out = tmp_path / "run"
    summary = main(["--stage", "all", "--kd", "pretrained", "--config", str(CONFIG_DIR / "smoke.yaml"),
                    "--out", str(out), "--quiet"])
    for name in stages.STAGES:
        s = summary[name]
        assert list(s)[:7] == ["mode", "transfer", "train_time_s", "zoo_build_time_s",
                               "zoo_build_time_by_entry_s", "stage_time_s", "peak_rss_mb"], name
        assert s["mode"] == s["transfer"]["mode"] == "pretrained"
        assert s["train_time_s"] > 0 and s["stage_time_s"] >= s["train_time_s"]
        assert json.loads((out / name / "outputs.json").read_text())
    # the chain ends with its report
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert (out / "report.md").is_file()
