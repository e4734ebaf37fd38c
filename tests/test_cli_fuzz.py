"""Property test: the CLI's numeric options, fuzzed with integers (huge, negative), floats (nan, inf,
1e23) and junk, all as strings. Every outcome is exit 0 or 2, never a traceback, and a refusal (exit 2)
leaves the registry exactly as it was.

Accepted values must stay cheap, so the work behind each command (rollout, collection, training,
pretraining) is replaced by a stub: what is fuzzed is the CLI's validation layer, end to end through
the real parser, settings, config resolution and registry opening.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from slatectl.cli import app, collect_cmd, env_rollout_cmd, train_cmd
from slatectl.registry import open_registry
from slatectl.train import inputs as pretrained

runner = CliRunner()

# Each template has one "{}" where the fuzzed value goes.
TEMPLATES = [
    ["env", "rollout", "focused_topdown", "--policy", "eps-oracle", "--episodes", "{}"],
    ["env", "rollout", "focused_topdown", "--policy", "random", "--seed", "{}"],
    ["env", "rollout", "focused_topdown", "--policy", "random", "--batch", "{}"],
    ["env", "rollout", "focused_topdown", "--policy", "eps-oracle", "--epsilon", "{}"],
    ["--threads", "{}", "env", "list"],
    ["collect", "--quality", "random", "--env", "focused_topdown", "--episodes", "{}"],
    ["collect", "--quality", "random", "--env", "focused_topdown", "--seed", "{}"],
    ["collect", "--quality", "random", "--env", "focused_topdown", "--batch", "{}"],
    ["train", "slateq", "--env", "focused_topdown", "--steps", "{}"],
    ["train", "slateq", "--env", "focused_topdown", "--save-every", "{}"],
    ["train", "slateq", "--env", "focused_topdown", "--seed", "{}"],
    ["train", "slateq", "--env", "focused_topdown", "--jobs", "{}"],
    ["train", "sac-gems", "--env", "focused_topdown,diffuse_mix", "--seeds", "{}"],
    ["train", "slateq", "--env", "focused_topdown", "--set", "agent.q_lr={}"],
    ["train", "slateq", "--env", "focused_topdown", "--set", "training.seed={}"],
    ["train", "slateq", "--env", "focused_topdown", "--set", "training.max_steps={}"],
    ["data", "logged", "--env", "focused_topdown", "--episodes", "{}"],
    ["data", "logged", "--env", "focused_topdown", "--seed", "{}"],
    ["data", "logged", "--env", "focused_topdown", "--epsilon", "{}"],
    ["pretrain", "gems", "--env", "focused_topdown", "--set", "lr={}"],
    ["pretrain", "gems", "--env", "focused_topdown", "--seed", "{}"],
    ["pretrain", "mf", "--env", "focused_topdown", "--set", "lr={}"],
    ["inspect", "--limit", "{}"],
    ["inspect", "run", "{}"],
    ["inspect", "dataset", "{}"],
]

EDGES = ["-1", "0", "1", "2", "3", "0.5", "1.5", "-0.0", "1e-300", "1e23", "1e308", "nan", "-nan", "inf", "-inf",
         str(2**31), str(2**32), str(2**63 - 1), str(2**63), str(2**64), str(10**20), "-" + str(2**63), "abc", "", " 7"]
VALUES = st.one_of(
    st.sampled_from(EDGES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def _fake_rollout(env, policy, episodes, seed, batch_size=1024, on_batch=None):
    return SimpleNamespace(mean=1.0, std=0.0, sem=0.0, seconds=1.0)


def _fake_datasets(registry, requests, on_batch_for=None):
    for request in requests:  # typed requests: the options were parsed once, by the CLI
        assert request.episodes >= 1 and request.batch_size >= 1
        yield SimpleNamespace(id=1, env=request.env, quality=request.quality, checkpoint_id=None,
                              episodes=request.episodes, transitions=request.episodes * 100, return_mean=1.0,
                              storage_key="datasets/x.npz", format=request.format, meta={})


def _fake_artifact(*args, **kwargs):
    return SimpleNamespace(id=1, metrics={"mean_return": 1.0})


@pytest.fixture
def stubbed(monkeypatch, sqlite_settings):
    monkeypatch.setattr(env_rollout_cmd, "rollout", _fake_rollout)
    monkeypatch.setattr(collect_cmd, "collect_datasets", _fake_datasets)
    monkeypatch.setattr(train_cmd, "train_runs", lambda *a, **k: iter([SimpleNamespace(run_id=1, tests=[], checkpoints=[])]))
    monkeypatch.setattr(train_cmd, "train_population", lambda *a, **k: [SimpleNamespace(run_id=1, tests=[], checkpoints=[])])
    for name in ("ensure_logged_data", "ensure_gems", "ensure_mf"):
        monkeypatch.setattr(pretrained, name, _fake_artifact)
    with open_registry(sqlite_settings):
        pass  # an existing, empty registry: refusals must leave it byte-for-byte as it is
    before = torch.get_num_threads()
    yield sqlite_settings
    torch.set_num_threads(before)


def snapshot(home) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.rglob("*")) if p.is_file()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(TEMPLATES), value=VALUES)
def test_numeric_options_exit_0_or_2_and_refusals_write_nothing(stubbed, template, value):
    args = [part.replace("{}", value) for part in template]
    before = snapshot(stubbed.home)
    result = runner.invoke(app, ["--home", str(stubbed.home), *args])
    assert result.exit_code in (0, 2), (args, result.output)
    assert "Traceback" not in result.output, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    if result.exit_code == 2:
        assert snapshot(stubbed.home) == before, args
