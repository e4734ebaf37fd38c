"""One validation style for configs (issue 21 item 5): every config dataclass checks itself in `validate()`
through `config_tools.check_params`, which reports every failed check of a section in one BadInput, each
naming its key with the section prefix; `build_config` calls it at the edge, and the pretraining entry
points call it again for configs built in Python, before any work."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from slatectl.agents import AGENTS
from slatectl.cli import app
from slatectl.config_tools import build_config, check_params
from slatectl.errors import BadInput
from slatectl.pretrain.gems_train import GeMSConfig, GeMSMember, train_gems, train_gems_population, train_stacked_gems
from slatectl.pretrain.logged import LoggedDataConfig, generate_logged_data
from slatectl.pretrain.mf import MFConfig, train_mf
from slatectl.sweep.spec import CollectSpec, Resources, SweepSpec
from slatectl.train.config import TrainingConfig

CONFIG_CLASSES = [TrainingConfig, LoggedDataConfig, GeMSConfig, MFConfig, Resources, CollectSpec, SweepSpec,
                  *{spec.params_cls for spec in AGENTS.values()}]


def refusal(cls, data, prefix):
    with pytest.raises(BadInput) as caught:
        build_config(cls, data, prefix)
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_check_params_lists_every_failed_check_in_order_and_passes_when_none_fails():
    with pytest.raises(BadInput) as caught:
        check_params("demo", [(True, "a is fine"), (False, "demo.b is bad"), (False, "demo.d is bad")])
    assert str(caught.value) == "invalid demo config: demo.b is bad; demo.d is bad."


def test_check_params_is_silent_when_every_check_holds():
    check_params("demo", [(True, "never shown"), (1 < 2, "never shown either")])


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_config_validates_in_validate_and_not_at_construction(cls):
    assert callable(getattr(cls, "validate", None))
    assert not hasattr(cls, "__post_init__"), f"{cls.__name__} validates at construction"


def test_gems_config_reports_every_bad_key_at_once():
    message = refusal(GeMSConfig, {"latent_dim": 0, "lambda_prior": 0.5, "reparam_noise": "sd", "val_fraction": 1.0,
                                   "max_slates": 1, "lambda_KL": -1.0, "accelerator": "tpu"}, "gems.")
    for key in ("gems.latent_dim", "gems.lambda_prior", "gems.reparam_noise", "gems.val_fraction", "gems.max_slates",
                "gems.lambda_KL", "gems.accelerator"):
        assert key in message, (key, message)
    for fine in ("gems.batch_size", "gems.lambda_click", "gems.lr"):
        assert fine not in message


def test_mf_config_reports_every_bad_key_at_once():
    message = refusal(MFConfig, {"embedding_dim": 0, "val_fraction": 1.0, "weight_decay": -0.1, "max_batches": 0,
                                 "patience": 0}, "mf.")
    for key in ("mf.embedding_dim", "mf.val_fraction", "mf.weight_decay", "mf.max_batches", "mf.patience"):
        assert key in message, (key, message)
    assert "mf.batch_size" not in message and "mf.lr" not in message


def test_training_config_reports_every_bad_key_at_once_with_its_flag():
    message = refusal(TrainingConfig, {"max_steps": 0, "keep_resume": 0, "random_steps": -1, "precision": "16",
                                       "seed": 5, "val_seed": 5}, "training.")
    for fragment in ("training.max_steps (--steps) must be >= 1 (got 0)",
                     "training.keep_resume (--keep-resume) must be >= 1 (got 0)",
                     "training.random_steps must be >= 0 (got -1)", "training.precision (--precision)",
                     "training.seed, training.val_seed and training.test_seed must differ"):
        assert fragment in message, (fragment, message)
    assert "training.val_every" not in message and "training.save_every" not in message


def test_agent_params_report_every_bad_key_at_once():
    message = refusal(AGENTS["sac-gems"].params_cls, {"capacity": 0, "gamma": 2.0, "alpha": -1.0}, "agent.")
    assert message.startswith("invalid agent config: ")
    for fragment in ("agent.capacity must be >= 1", "agent.gamma must lie in [0, 1]", "agent.alpha must be >= 0"):
        assert fragment in message, (fragment, message)


def test_agent_choice_keys_name_their_choices_and_the_bad_value():
    message = refusal(AGENTS["sac-wknn"].params_cls, {"item_table": "x", "proto_layout": "y", "rank_state": "z"},
                      "agent.")
    for fragment in ("agent.item_table must be one of critic-belief, ideal, mf (got 'x')",
                     "agent.proto_layout must be one of slot-major, dim-major (got 'y')",
                     "agent.rank_state must be one of critic, actor (got 'z')"):
        assert fragment in message, (fragment, message)
    message = refusal(AGENTS["slateq"].params_cls, {"act_relevance": "w"}, "agent.")
    assert "agent.act_relevance must be one of masked, reference-slice, unmasked (got 'w')" in message


def test_sweep_spec_reports_every_bad_key_at_once():
    message = refusal(SweepSpec, {"agents": ["no-such-agent"], "envs": ["nowhere"], "seeds": [1, 1], "steps": 0,
                                  "lease_timeout_s": 1}, "")
    for fragment in ("no-such-agent", "nowhere", "seeds must", "steps must", "lease_timeout_s must"):
        assert fragment in message, (fragment, message)


def test_the_train_command_names_every_bad_key_of_a_section_and_starts_nothing(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["--home", str(home), "train", "reinforce-softmax", "--env", "focused_topdown",
                                      "--steps", "3", "--set", "gems.latent_dim=0", "--set", "gems.val_fraction=1"])
    assert result.exit_code == 2, result.output
    assert "gems.latent_dim" in result.output and "gems.val_fraction" in result.output
    assert not home.exists()


# The data arguments below are None: any work on them (splitting, stacking, simulating) would raise
# AttributeError or TypeError, so a BadInput shows the config was refused before any work.

BAD_GEMS = GeMSConfig(latent_dim=0, val_fraction=1.0)
BAD_MF = MFConfig(embedding_dim=0, lr=0.0)


def test_train_gems_refuses_an_invalid_config_object_before_any_work():
    epochs = []
    with pytest.raises(BadInput, match=r"gems\.latent_dim.*gems\.val_fraction"):
        train_gems(None, None, BAD_GEMS, seed=0, progress_callback=epochs.append)
    assert epochs == []


def test_train_gems_population_refuses_any_invalid_member_before_any_stack_trains():
    members = [GeMSMember(None, None, GeMSConfig(max_epochs=1), 0), GeMSMember(None, None, BAD_GEMS, 1)]
    with pytest.raises(BadInput, match=r"gems\.latent_dim"):
        train_gems_population(members)
    with pytest.raises(BadInput, match=r"gems\.latent_dim"):
        train_stacked_gems(members[1:])


def test_train_mf_refuses_an_invalid_config_object_before_any_work():
    with pytest.raises(BadInput, match=r"mf\.embedding_dim.*mf\.lr"):
        train_mf(None, None, BAD_MF, seed=0)


def test_generate_logged_data_refuses_an_invalid_config_object_before_any_work():
    batches = []
    with pytest.raises(BadInput, match=r"logged\.episodes.*logged\.epsilon"):
        generate_logged_data(None, LoggedDataConfig(episodes=1, epsilon=1.5), on_batch=batches.append)
    assert batches == []


def test_valid_configs_pass_validate_unchanged():
    for cls in (TrainingConfig, LoggedDataConfig, GeMSConfig, MFConfig, Resources):
        default = cls()
        default.validate()
        assert build_config(cls, dataclasses.asdict(default)) == default
