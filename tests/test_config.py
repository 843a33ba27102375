import pytest
import yaml

from dafsl.config import DEFAULT_CONFIG, load_config, parse_override
from dafsl.errors import DafslError


def test_defaults_load_and_smoke_overrides():
    base = load_config()
    smoke = load_config("configs/smoke.yaml")
    assert base["data"]["manifest"] == "synthfaces"
    assert smoke["data"]["manifest"] == "synthfaces_tiny"
    assert set(base) == set(smoke)  # a config file can only override known keys


def test_set_overrides_parse_yaml_values():
    cfg = load_config(None, ["seed=7", "data.imbalance_threshold=0.25", "data.cache_dir=/x"])
    assert cfg["seed"] == 7 and cfg["data"]["imbalance_threshold"] == 0.25
    assert cfg["data"]["cache_dir"] == "/x"
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


@pytest.mark.parametrize("item, msg", [
    ("data.nope=1", "unknown config key 'data.nope'"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("seed=abc", "seed must be a number"),
    ("seed=1.5", "seed must be an integer"),
    ("data.manifest=3", "data.manifest must be a string"),
    ("seed", "expected KEY=VALUE"),
])
def test_bad_overrides_are_one_line_errors(item, msg):
    with pytest.raises(DafslError, match=msg.replace("[", r"\[")) as err:
        load_config(None, [item])
    assert "\n" not in str(err.value)


def test_unknown_key_in_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"manifets": "x"}}))
    with pytest.raises(DafslError, match=r"bad.yaml: unknown config key 'data.manifets'"):
        load_config(bad)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(DafslError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(DafslError, match="invalid YAML"):
        load_config(broken)


# ---------------------------------------------------------------- value schema
import copy  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from dafsl import config_schema  # noqa: E402
from dafsl.config import FrozenDict, read_yaml, thaw  # noqa: E402
from dafsl.config_schema import SCHEMA, TYPE_ONLY  # noqa: E402

SMOKE = "configs/smoke.yaml"
TYPOS = [  # the three cases of issue 10, with the whole line computed by hand
    ("detector.optimizer=adamm", "detector.optimizer: expected one of adamw, sgd, got 'adamm'"),
    ("detector.lr_schedule=cosin",
     "detector.lr_schedule: expected one of cosine, constant, got 'cosin'"),
    ("detector.epochs=-1", "detector.epochs: expected an integer >= 1, got -1"),
]


@pytest.mark.parametrize("item, line", TYPOS)
def test_typo_is_one_line_and_exit_2_before_any_run_dir(item, line, tmp_path, capsys):
    from dafsl.pipeline import main

    with pytest.raises(SystemExit) as exit_:
        main(["--config", SMOKE, "--set", item, "--out", str(tmp_path / "run"), "--quiet"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {line}\n"
    assert not (tmp_path / "run").exists()  # refused at load, before anything is written


def test_typo_through_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dafsl.pipeline", "--config", SMOKE,
                           "--set", "detector.optimizer=adamm", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {TYPOS[0][1]}\n"


def _leaves(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_every_default_key_has_a_rule():
    leaves = _leaves(read_yaml(DEFAULT_CONFIG))
    assert leaves - set(SCHEMA) - TYPE_ONLY == set()  # a new key needs a rule (or TYPE_ONLY)
    assert set(SCHEMA) - leaves == set()              # no rule for a key that is gone
    assert not set(SCHEMA) & TYPE_ONLY


BAD = [(key, bad) for key, rule in SCHEMA.items() for bad in rule.bad]


def test_every_rule_has_a_bad_value():
    assert {key for key, _ in BAD} == set(SCHEMA)


@pytest.mark.parametrize("key, bad", BAD, ids=[f"{k}={json.dumps(b)}" for k, b in BAD])
def test_every_key_refuses_a_bad_value_naming_the_key(key, bad):
    with pytest.raises(DafslError) as err:
        load_config(SMOKE, [f"{key}={json.dumps(bad)}"])
    msg = str(err.value)
    assert msg.startswith(f"{key}: expected ") and "\n" not in msg
    assert msg.endswith(f"got {bad!r}")


@pytest.mark.parametrize("path", ["configs/default.yaml", SMOKE, "configs/paper.yaml"])
def test_shipped_configs_load_validate_and_freeze(path):
    cfg = load_config(path)
    assert isinstance(cfg, FrozenDict) and isinstance(cfg["detector"]["augment"], FrozenDict)
    assert config_schema.validate(thaw(cfg)) == cfg  # idempotent: nothing left to normalise


def test_paper_values():
    cfg = load_config("configs/paper.yaml")
    assert cfg["detector"]["optimizer"] == "sgd" and cfg["detector"]["backbone"] == "resnet50"
    assert cfg["detector"]["epochs"] == 100 and cfg["augmenter"]["epochs"] == 1000
    assert cfg["augmenter"]["resolution"] == 128 and len(cfg["augmenter"]["channels"]) == 6
    assert cfg["data"]["manifest"] == "paper"


@pytest.mark.parametrize("item, line", [
    ("data.imbalance_threshold=0", "data.imbalance_threshold: expected a number in (0, 1], got 0"),
    ("detector.momentum=1", "detector.momentum: expected a number in [0, 1), got 1"),
    ("augmenter.resolution=48", "augmenter.resolution: expected a power of two >= 8, got 48"),
    ("similarity.p=0.5", "similarity.p: expected a number >= 1 or inf, got 0.5"),
    ("similarity.p=-.inf", "similarity.p: expected a number >= 1 or inf, got -inf"),
    ("augmenter.betas=[0.5]",
     "augmenter.betas: expected a list of 2 numbers in [0, 1), got [0.5]"),
    ("detector.fpn_layers=[layer3, layer2]", "detector.fpn_layers: expected a non-empty list of "
     "names from layer1, layer2, layer3, layer4 in that order, no repeats, "
     "got ['layer3', 'layer2']"),
    ("augmenter.diffaug='color,flip'", "augmenter.diffaug: expected comma-separated names from "
     "color, translation, cutout, or \"\" (off), got 'color,flip'"),
    ("classifier.source=detectr", "classifier.source: expected one of detector, zoo, imagenet, "
     "or a checkpoint path, got 'detectr'"),
    # cross-key rules (default config: 32 px GAN, 4 levels; similar 0.94)
    ("augmenter.channels=[8, 8]",
     "augmenter.channels: expected one channel count per resolution 4..32 (4 values), got 2"),
    ("augmenter.g_frozen_blocks=4",
     "augmenter.g_frozen_blocks: expected 0..3 at resolution 32, got 4"),
    ("augmenter.source.epochs=34",
     "augmenter.source.epochs: expected >= 35 (the source GAN's growth to 32 px), got 34"),
    ("similarity.dissimilar=0.95",
     "similarity.dissimilar: expected <= similarity.similar (0.94), got 0.95"),
    ("detector.anchor_sizes=[[16], [32]]",
     "detector.anchor_sizes: expected one list per FPN level (3: fpn_layers), got 2"),
    ("detector.anchor_sizes=[[16], [32], [64, 90]]",
     "detector.anchor_sizes: expected the same number of sizes on every level (one RPN head)"),
])
def test_bad_values_and_cross_rules_give_the_exact_line(item, line):
    with pytest.raises(DafslError) as err:
        load_config(None, [item])
    assert str(err.value) == line


@pytest.mark.parametrize("item, key, value", [
    ("data.imbalance_threshold=1", "data.imbalance_threshold", 1),
    ("detector.momentum=0", "detector.momentum", 0),
    ("similarity.p=inf", "similarity.p", float("inf")),
    ("similarity.p=.inf", "similarity.p", float("inf")),
    ("similarity.p=1", "similarity.p", 1),
    ("similarity.dissimilar=0.94", "similarity.dissimilar", 0.94),  # == similar is allowed
    ("detector.backbone=timm/resnet18", "detector.backbone", "timm/resnet18"),
    ("transfer.source=/some/where/ckpt.pt", "transfer.source", "/some/where/ckpt.pt"),
    ("classifier.source=zoo", "classifier.source", "zoo"),
    ("augmenter.diffaug=", "augmenter.diffaug", ""),
    ("augmenter.diffaug='cutout, color'", "augmenter.diffaug", "cutout, color"),
    ("augmenter.fill_count=4.0", "augmenter.fill_count", 4),
    ("classifier.epoch_size=null", "classifier.epoch_size", None),
    ("augmenter.g_frozen_blocks=3", "augmenter.g_frozen_blocks", 3),
    ("stages.all=[detector, classifier]", "stages.all", ["detector", "classifier"]),
    ("classifier.teacher.mode=finetune", "classifier.teacher.mode", "finetune"),
])
def test_boundary_and_open_values_are_accepted(item, key, value):
    cfg = load_config(None, [item])
    got = config_schema.lookup(cfg, key)
    assert got == value
    assert type(got) is type(value) or isinstance(value, list)


def test_config_is_frozen_at_every_level():
    cfg = load_config(SMOKE)
    before = json.dumps(cfg)
    attempts = [
        lambda: cfg.__setitem__("seed", 1),
        lambda: cfg["detector"].__setitem__("optimizer", "sgd"),
        lambda: cfg["detector"]["augment"].__setitem__("hflip", 0.0),
        lambda: cfg["detector"]["augment"].update(hflip=0.0),
        lambda: cfg["classifier"].pop("lr"),
        lambda: cfg["classifier"].setdefault("new", 1),
        lambda: cfg["zoo"].clear(),
        lambda: cfg["data"].popitem(),
        lambda: cfg["transfer"].__delitem__("source"),
        lambda: cfg["detector"]["fpn_layers"].append("layer1"),
        lambda: cfg["detector"]["anchor_sizes"][0].__setitem__(0, 8),
        lambda: cfg["augmenter"]["channels"].sort(),
        lambda: cfg["stages"]["all"].extend(["detector"]),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError, match="frozen"):
            attempt()
    d = cfg["detector"]
    with pytest.raises(TypeError):
        d |= {"epochs": 9}
    lst = cfg["augmenter"]["channels"]
    with pytest.raises(TypeError):
        lst += [4]
    assert json.dumps(cfg) == before


def test_thaw_and_deepcopy_give_mutable_plain_copies():
    cfg = load_config(SMOKE)
    for copy_ in (thaw(cfg), copy.deepcopy(cfg)):
        assert type(copy_) is dict and type(copy_["detector"]["augment"]) is dict
        assert type(copy_["detector"]["anchor_sizes"][0]) is list
        assert copy_ == cfg
        copy_["detector"]["augment"]["hflip"] = 0.0
        copy_["detector"]["anchor_sizes"][0].append(99)
        assert cfg["detector"]["augment"]["hflip"] == 0.5
        assert 99 not in cfg["detector"]["anchor_sizes"][0]


def test_frozen_config_dumps_like_a_plain_dict(tmp_path):
    from dafsl.config import dump_config
    from dafsl.runs import load_checkpoint, save_checkpoint

    cfg = load_config(SMOKE)
    assert json.dumps(cfg) == json.dumps(thaw(cfg))
    assert yaml.safe_dump(cfg, sort_keys=False) == yaml.safe_dump(thaw(cfg), sort_keys=False)
    dump_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == thaw(cfg)
    again = pickle.loads(pickle.dumps(cfg))  # DataLoader workers get a frozen config too
    assert isinstance(again["detector"], FrozenDict) and again == cfg
    # checkpoints hold plain containers, so weights_only=True loads them
    save_checkpoint({"detector_cfg": dict(cfg["detector"]), "n": 1}, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt")["detector_cfg"] == thaw(cfg["detector"])


def test_schema_choices_match_the_stages_own_lists():
    """The stages keep some of these tuples themselves; they must agree with the schema."""
    from dafsl.augmenter import diffaug
    from dafsl.classifier import distill
    from dafsl import stages

    # registries that live with their code must list what the schema allows
    assert tuple(distill.DISTILLERS) == config_schema.DISTILLERS
    assert diffaug.POLICIES == config_schema.DIFFAUG_POLICIES
    assert tuple(stages.STAGES) == config_schema.STAGES
