"""Config validation: wrong keys, types and values fail at start-up, naming the key and what is allowed."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlvr_lab.cli import app
from rlvr_lab.config import ConfigError, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_demo_config_and_presets_validate():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.algorithm.policy_loss.name == "ppo_clip"
    for preset in ("grpo", "dr_grpo", "dapo", "gspo"):
        merged = load_config(CONFIGS / "demo.yaml", presets=[preset])
        assert merged.model.source == "tiny"


def test_presets_set_their_published_defaults():
    dapo = load_config(CONFIGS / "demo.yaml", presets=["dapo"]).algorithm
    assert (dapo.policy_loss.params["clip_low"], dapo.policy_loss.params["clip_high"]) == (0.2, 0.28)
    assert dapo.dynamic_sampling.enabled and dapo.aggregation == "token-mean"
    dr = load_config(CONFIGS / "demo.yaml", presets=["dr_grpo"]).algorithm
    assert dr.advantage.name == "dr_grpo" and dr.aggregation == "seq-mean-token-sum-norm"
    gspo = load_config(CONFIGS / "demo.yaml", presets=["gspo"]).algorithm
    assert gspo.policy_loss.name == "gspo" and gspo.effective_aggregation == "seq-mean-token-mean"


def test_unknown_key_names_key_and_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"train": {"stepz": 3}}))
    msg = str(err.value)
    assert "train.stepz" in msg and "unknown key" in msg and "steps" in msg


def test_wrong_type_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"train.steps.*'many'"):
        load_config(None, overrides=["train.steps=many"])
    with pytest.raises(ConfigError, match=r"rollout.temperature.*-1"):
        load_config(None, overrides=["rollout.temperature=-1"])
    with pytest.raises(ConfigError, match=r"run.device"):
        load_config(None, overrides=["run.device=tpu"])


def test_unknown_registry_names_and_params_list_valid_ones():
    with pytest.raises(ConfigError, match=r"ppo_clip"):
        load_config(None, overrides=["algorithm.policy_loss.name=ppo"])
    with pytest.raises(ConfigError, match=r"clip_hgh.*clip_high"):
        load_config(CONFIGS / "demo.yaml", overrides=["algorithm.policy_loss.params={clip_hgh: 0.3}"])
    with pytest.raises(ConfigError, match=r"token-mean"):
        load_config(None, overrides=["algorithm.aggregation=mean"])
    with pytest.raises(ConfigError, match=r"k3"):
        load_config(None, overrides=["algorithm.kl.kind=k9"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="minibatches"):
        load_config(None, overrides=["train.prompts_per_step=3", "train.group_size=3", "train.minibatches=2"])
    with pytest.raises(ConfigError, match="samples"):
        load_config(None, overrides=["eval.samples=4", "eval.k=[1,8]"])


def test_overrides_parse_yaml_values_and_merge(tmp_path):
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    with pytest.raises(ConfigError):
        parse_override("novalue")
    cfg = load_config(CONFIGS / "demo.yaml", overrides=["train.steps=7", "model.tiny.num_layers=2",
                                                         "run.output_dir=/x", "run.name=y"])
    assert cfg.train.steps == 7 and cfg.model.tiny.num_layers == 2 and cfg.model.tiny.hidden_size == 128
    assert (cfg.run.output_dir, cfg.run.name) == ("/x", "y")
    # switching a component by name drops the previous component's parameters
    gspo = load_config(CONFIGS / "demo.yaml", overrides=["algorithm.policy_loss.name=gspo"])
    assert gspo.algorithm.policy_loss.params == {}
    task = load_config(CONFIGS / "demo.yaml", overrides=["task.name=chain_sum"]).task
    assert task.config == {} and task.eval_size == 200


def test_extends_cycle_and_missing_file(tmp_path):
    write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    write(tmp_path, {"extends": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(app, ["show-config", str(CONFIGS / "demo.yaml"), "train.stepz=1"])
    assert result.exit_code == 2
    assert "train.stepz" in result.output


def test_cli_help_on_every_command():
    runner = CliRunner()
    for cmd in ([], ["train"], ["show-config"], ["list"]):
        result = runner.invoke(app, cmd + ["--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output
