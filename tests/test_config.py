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


def test_default_config_is_the_schema_file():
    assert DEFAULT_CONFIG.name == "default.yaml" and DEFAULT_CONFIG.is_file()
