"""Values are parsed once, where they enter (issue 21 item 5): the CLI and the sweep spec build typed values
(`Quality`, `BehaviourMode`, `DatasetFormat`, `DeviceChoice`, a tuple of env names) and the library takes
them as they are; a string where an enum belongs is a programming error, not something re-parsed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from slatectl.cli import app, train_cmd
from slatectl.collect.collector import CollectRequest, parse_encoder
from slatectl.config_tools import build_config
from slatectl.domain import BehaviourMode, DatasetFormat, DeviceChoice, Quality
from slatectl.errors import BadInput
from slatectl.registry import lookups, open_registry
from slatectl.sim.config import ALL_ENVS, env_names, select_envs
from slatectl.sweep.spec import parse_spec
from slatectl.train.config import TrainingConfig

runner = CliRunner()
ENVS = env_names()


@pytest.mark.parametrize("field, text", [("quality", "medium"), ("format", "npz"), ("act", "greedy")])
def test_a_collect_request_takes_enums_not_their_names(field, text):
    with pytest.raises(TypeError, match=field):
        CollectRequest("focused_topdown", **{"quality": Quality.MEDIUM, field: text})
    request = CollectRequest("focused_topdown", Quality.MEDIUM, format=DatasetFormat.NPZ, act=BehaviourMode.GREEDY)
    assert request.quality is Quality.MEDIUM and request.act is BehaviourMode.GREEDY


def test_the_encoder_option_is_parsed_into_an_id_or_none():
    assert parse_encoder(None) is None and parse_encoder("none") == "none" and parse_encoder("12") == 12
    with pytest.raises(BadInput, match="--encoder takes a GeMS artifact id"):
        parse_encoder("gems")


def test_the_registry_parses_only_strings_and_takes_a_quality_as_it_is(monkeypatch):
    calls = []
    real = lookups.parse_quality
    monkeypatch.setattr(lookups, "parse_quality", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert lookups.check_quality(Quality.EXPERT) is Quality.EXPERT and calls == []
    assert lookups.check_quality("medium") is Quality.MEDIUM and calls == [("medium", False)]
    with pytest.raises(BadInput, match="nothing to promote"):  # the domain rule holds for a parsed value too
        lookups.check_quality(Quality.RANDOM)


def test_collect_random_parses_the_quality_once_at_the_option(sqlite_settings, monkeypatch):
    """`--quality random` becomes `Quality.RANDOM` in the option parser; from there to the registry row no
    layer parses it again (the registry's string parser is never called) and the row holds plain text."""
    calls = []
    real = lookups.parse_quality
    monkeypatch.setattr(lookups, "parse_quality", lambda *a, **k: calls.append(a) or real(*a, **k))
    seen = []
    real_init = CollectRequest.__post_init__
    monkeypatch.setattr(CollectRequest, "__post_init__", lambda self: seen.append(self.quality) or real_init(self))
    result = runner.invoke(app, ["--home", str(sqlite_settings.home), "collect", "--quality", "random", "--env",
                                 "focused_topdown", "--episodes", "2", "--batch", "2", "--encoder", "none", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == []
    assert seen and all(type(q) is Quality for q in seen)
    with open_registry(sqlite_settings) as registry:
        (dataset,) = registry.list_datasets()
    assert type(dataset.quality) is str and dataset.quality == "random" and dataset.policy == "random"


def test_env_selection_is_parsed_in_one_place():
    assert select_envs(ALL_ENVS).names == tuple(ENVS) and select_envs(ALL_ENVS).every
    one = select_envs("diffuse_mix")
    assert one.names == ("diffuse_mix",) and not one.several
    listed = select_envs(f"{ENVS[2]}, {ENVS[0]}")
    assert listed.names == (ENVS[2], ENVS[0]) and listed.listed and listed.several
    for bad, message in (("nowhere", "unknown environment 'nowhere'"), (f"{ENVS[0]},{ENVS[0]}", "distinct"),
                         (",", "distinct"), (f"{ENVS[0]},nowhere", "unknown environment 'nowhere'")):
        with pytest.raises(BadInput, match=message):
            select_envs(bad)
    with pytest.raises(BadInput, match="unknown environment"):  # one env only: a list is not a name
        select_envs(f"{ENVS[0]},{ENVS[1]}", lists=False)


def test_train_hands_the_library_the_parsed_env_names(sqlite_settings, monkeypatch):
    population, solo = [], []
    monkeypatch.setattr(train_cmd, "train_population", lambda settings, agent, envs, *a, **k: population.append(envs) or [])
    monkeypatch.setattr(train_cmd, "train_runs", lambda settings, configs, *a, **k: solo.append([c.env for c in configs]) or iter([]))
    base = ["--home", str(sqlite_settings.home), "train", "slateq", "--steps", "3"]
    assert runner.invoke(app, [*base, "--env", f"{ENVS[1]},{ENVS[0]}"]).exit_code == 0
    assert runner.invoke(app, [*base, "--env", ALL_ENVS, "--seeds", "2"]).exit_code == 0
    assert runner.invoke(app, [*base, "--env", ALL_ENVS]).exit_code == 0
    assert population == [(ENVS[1], ENVS[0]), tuple(ENVS)] and solo == [ENVS]
    bad = runner.invoke(app, [*base, "--env", f"{ENVS[0]},{ENVS[0]}"])
    assert bad.exit_code == 2 and "distinct environments" in bad.output


def test_a_config_enum_field_is_parsed_by_build_config():
    assert build_config(TrainingConfig, {"device": "cuda"}).device is DeviceChoice.CUDA
    assert TrainingConfig().device is DeviceChoice.AUTO
    with pytest.raises(BadInput, match="training.device.*auto, cpu, cuda.*'tpu'"):
        build_config(TrainingConfig, {"device": "tpu"}, "training.")


def test_the_sweep_spec_holds_typed_collect_values():
    spec = parse_spec({"agents": ["slateq"], "envs": ALL_ENVS, "seeds": [1], "steps": 10,
                       "collect": {"qualities": ["expert", "medium"], "act": "greedy", "encoder": "7"}})
    assert spec.envs == tuple(ENVS)
    assert spec.collect.qualities == (Quality.EXPERT, Quality.MEDIUM) and all(type(q) is Quality for q in spec.collect.qualities)
    assert spec.collect.act is BehaviourMode.GREEDY and spec.collect.encoder == 7 and spec.collect.agent == "slateq"
    assert parse_spec(spec.to_dict()) == spec
    # the driver builds its requests from these values as they are (a string would be a TypeError)
    request = CollectRequest(spec.envs[0], spec.collect.qualities[0], act=spec.collect.act, encoder=spec.collect.encoder)
    assert request.quality is Quality.EXPERT and request.encoder == 7
