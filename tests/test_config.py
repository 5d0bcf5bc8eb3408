"""Typed config: YAML + dotted overrides, with one clear message for every mistake."""

import pytest

from lmsmith.core.config import ConfigError, apply_overrides, parse_section
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.stage import stage_config
from lmsmith.stages import INIT


def load_model_config(path, overrides=()):
    """The model section as `lmsmith init --config PATH KEY=VALUE...` reads it (the shared loader)."""
    return stage_config(INIT, path, list(overrides)).model


def test_overrides_reach_nested_keys_and_parse_values():
    raw = apply_overrides(
        {"model": {"n_layer": 2}}, ["model.n_layer=4", "model.dropout=0.1", "model.bias=true", "train.lr=3e-4"]
    )
    assert raw == {"model": {"n_layer": 4, "dropout": 0.1, "bias": True}, "train": {"lr": 3e-4}}


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  n_layer: 2\n  n_embd: 64\n  n_head: 4\n")
    config = load_model_config(path, ["model.n_head=8"])
    assert (config.n_layer, config.n_embd, config.n_head) == (2, 64, 8)


def test_bare_keys_are_read_as_the_model_section(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("n_layer: 3\n")
    assert load_model_config(path).n_layer == 3


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'model.n_layers': did you mean 'n_layer'\?"):
        parse_section(ModelConfig, {"n_layers": 4}, "model")


@pytest.mark.parametrize(
    "raw, pattern",
    [
        ({"n_layer": "four"}, r"model.n_layer: expected a whole number, got 'four'"),
        ({"n_layer": 2.5}, r"model.n_layer: expected a whole number"),
        ({"bias": "yes"}, r"model.bias: expected true or false"),
        ({"position": "alibi"}, r"model.position: 'alibi' is not one of 'learned', 'sinusoidal', 'rope'"),
        ({"n_embd": 100, "n_head": 3}, r"model.n_embd \(100\) is not divisible by model.n_head \(3\)"),
        ({"n_head": 6, "n_embd": 384, "n_kv_head": 4},
         r"model.n_head \(6\) is not divisible by model.n_kv_head \(4\): pick n_kv_head among \[1, 2, 3, 6\]"),
        ({"dropout": 1.5}, r"model.dropout must be in \[0, 1\)"),
        ({"preset": "gpt3"}, r"model.preset: 'gpt3' is not one of"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(raw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_section(ModelConfig, raw, "model")


def test_preset_gives_family_defaults_that_keys_override():
    config = parse_section(ModelConfig, {"preset": "gpt2", "n_layer": 2}, "model")
    assert config.position == "learned" and config.norm == "layernorm" and config.bias and config.n_layer == 2
    llama = parse_section(ModelConfig, {"preset": "llama"}, "model")
    assert llama.position == "rope" and llama.feed_forward == "swiglu" and not llama.tie_embeddings


def test_ints_widen_to_floats():
    assert parse_section(ModelConfig, {"rope_theta": 500000}, "model").rope_theta == 500000.0


def test_bad_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_model_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_config(tmp_path / "nope.yaml")


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides({}, ["model.n_layer"])


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads `3e-4` as a string; a float field must still take it.
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  rope_theta: 1e4\n  norm_eps: 1e-6\n")
    config = load_model_config(path)
    assert config.rope_theta == 1e4 and config.norm_eps == 1e-6
