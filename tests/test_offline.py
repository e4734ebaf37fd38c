"""Datasets as an offline-RL researcher uses them: one set of spaces per env, the behaviour policy, complete
files, the env in the dataset's spaces, `evaluate`, relabelling and promotion sense."""

import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import slatectl
from offline_helpers import ENV, tiny_gems, trained_home
from slatectl.cli import app
from slatectl.collect import load_npz
from slatectl.collect.collector import GAMMA, CollectRequest, collect_dataset
from slatectl.collect.encoder import encode_arrays, load_encoder
from slatectl.collect.npz import METADATA_KEY, write_npz
from slatectl.collect.policy_eval import evaluate_policy
from slatectl.collect.relabel import relabel_dataset
from slatectl.domain import BehaviourMode, DatasetFormat, Quality
from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.sim.factory import make_env as make_simulator
from slatectl.sim.seeds import TEST_SEED


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return trained_home(tmp_path_factory.mktemp("offline") / "home")


@pytest.fixture(scope="module")
def pooled(home):
    """random, medium and expert datasets of one env, collected with the defaults."""
    with open_registry(home.settings) as registry:
        datasets = {q: collect_dataset(registry, CollectRequest(ENV, q, episodes=20, seed=3)) for q in Quality}
        loaded = {q: load_npz(registry.dataset_path(d.id)) for q, d in datasets.items()}
    return datasets, loaded


def test_random_medium_and_expert_share_their_spaces_and_encoder(home, pooled):
    datasets, loaded = pooled
    shared = {q: {k: (a.dtype, a.shape[1:]) for k, a in arrays.items() if not k.startswith("agent/")}
              for q, (arrays, _) in loaded.items()}
    assert shared["random"] == shared["medium"] == shared["expert"]
    assert shared["random"]["observations/latent"] == (np.float32, (32,))
    assert shared["random"]["actions/latent"] == (np.float32, (32,))
    encoders = {q: metadata["encoder"] for q, (_, metadata) in loaded.items()}
    assert encoders["random"] == encoders["medium"] == encoders["expert"]
    assert encoders["random"]["artifact_id"] == home.gems.id and encoders["random"]["sha256"] == home.gems.sha256
    # the collecting agent's own belief and latent are extras, absent for the random policy
    assert not any(k.startswith("agent/") for k in loaded["random"][0])
    assert loaded["expert"][0]["agent/belief"].shape == (2000, 20) and loaded["expert"][0]["agent/latent"].shape == (2000, 20)
    for arrays, metadata in loaded.values():
        assert metadata["format_version"] == 2 and metadata["horizon"] == 100 and metadata["gamma"] == GAMMA
        assert (metadata["action_low"], metadata["action_high"]) == (-1.0, 1.0)
        assert np.abs(arrays["actions/latent"]).max() <= 1.0
        assert arrays["final/latent"].shape == (20, 32) and arrays["final/slate"].shape == (20, 10)


def test_the_encoder_features_are_the_gems_posterior_means(home, pooled):
    _, loaded = pooled
    arrays, _ = loaded["medium"]
    with open_registry(home.settings) as registry:
        encoder = load_encoder(registry, home.gems.id, ENV)
    gems, center, scale = encoder.gems, encoder.center, encoder.scale
    rows = torch.tensor([0, 57, 1999])
    slates = torch.from_numpy(arrays["observations/slate"][rows]).long()
    clicks = torch.from_numpy(arrays["observations/clicks"][rows]).float()
    # μ written out: the item embeddings of the slate, slot-major, then the clicks, through the encoder MLP
    x = torch.cat([gems.item_embeddings.weight[slates].flatten(1), clicks], dim=1)
    mu = gems.encoder(x)[:, :gems.latent_dim]
    np.testing.assert_allclose(arrays["observations/latent"][rows], mu.detach().numpy(), atol=1e-5)
    # the action: the slate alone (zero clicks), normalised by the GeMS action box and clipped to [-1, 1]
    action_slates = torch.from_numpy(arrays["actions/slate"][rows]).long()
    x = torch.cat([gems.item_embeddings.weight[action_slates].flatten(1), torch.zeros(3, 10)], dim=1)
    expected = ((gems.encoder(x)[:, :gems.latent_dim] - center) / scale).clamp(-1, 1)
    np.testing.assert_allclose(arrays["actions/latent"][rows], expected.detach().numpy(), atol=1e-5)
    # the final observation: each episode's last recommended slate with its clicks
    np.testing.assert_array_equal(arrays["final/slate"], arrays["actions/slate"].reshape(20, 100, 10)[:, -1])
    # decoding an action: GeMS ranking of center + scale * a
    a = torch.tensor(arrays["actions/latent"][rows])
    np.testing.assert_array_equal(encoder.decode(a).numpy(), gems.rank(center + scale * a).numpy())


def test_sample_is_the_default_behaviour_and_differs_from_greedy_from_the_first_step(home, pooled):
    datasets, loaded = pooled
    assert loaded["medium"][1]["behaviour"] == "sample" and loaded["random"][1]["behaviour"] == "uniform random"
    with open_registry(home.settings) as registry:
        greedy = collect_dataset(registry, CollectRequest(ENV, Quality.MEDIUM, episodes=20, seed=3, act=BehaviourMode.GREEDY))
        arrays, metadata = load_npz(registry.dataset_path(greedy.id))
    assert metadata["behaviour"] == "greedy"
    sampled = loaded["medium"][0]
    first = np.arange(20) * 100  # step 0 of every episode: the same users, the same reset observation and belief
    np.testing.assert_array_equal(arrays["observations/slate"][first], sampled["observations/slate"][first])
    np.testing.assert_array_equal(arrays["agent/belief"][first], sampled["agent/belief"][first])
    # greedy = center + scale·tanh(mean), sampled = center + scale·tanh(mean + std·ε): differ for every user
    assert (np.abs(arrays["agent/latent"][first] - sampled["agent/latent"][first]).max(axis=1) > 0).all()


def test_make_env_has_the_dataset_spaces_and_replays_its_users(home, pooled):
    datasets, loaded = pooled
    arrays, metadata = loaded["expert"]
    with open_registry(home.settings) as registry:
        path = registry.dataset_path(datasets["expert"].id)
    by_id = slatectl.make_env(dataset=datasets["expert"].id, home=home.settings.home)
    by_path = slatectl.make_env(dataset=str(path), home=home.settings.home, action="slate")
    assert by_id.action_space.shape == (32,) and by_id.action_space.dtype == np.float32
    assert (by_id.action_space.low == -1).all() and (by_id.action_space.high == 1).all()
    assert by_id.observation_space == by_path.observation_space
    for key, space in by_id.observation_space.spaces.items():
        assert space.dtype == arrays[f"observations/{key}"].dtype and space.shape == arrays[f"observations/{key}"].shape[1:]
    # user 0 of the dataset's seed, stepped with the dataset's slates: the dataset's observations and rewards
    observation, _ = by_path.reset(seed=metadata["seed"])
    rewards = []
    for t in range(100):
        np.testing.assert_array_equal(observation["slate"], arrays["observations/slate"][t])
        np.testing.assert_array_equal(observation["clicks"], arrays["observations/clicks"][t])
        np.testing.assert_allclose(observation["latent"], arrays["observations/latent"][t], atol=1e-5)
        observation, reward, terminated, truncated, _ = by_path.step(arrays["actions/slate"][t])
        assert isinstance(reward, np.float32) and not terminated and truncated == (t == 99)
        rewards.append(reward)
    np.testing.assert_array_equal(rewards, arrays["rewards"][:100])
    np.testing.assert_allclose(observation["latent"], arrays["final/latent"][0], atol=1e-5)


def _zero_policy(observation):
    return np.zeros((observation["slate"].shape[0], 32), dtype=np.float32)


def test_evaluate_scores_a_callable_and_a_torchscript_file_on_the_test_users(home, pooled, tmp_path, monkeypatch):
    datasets, loaded = pooled
    expert_id = datasets["expert"].id
    _, metadata = loaded["expert"]
    with open_registry(home.settings) as registry:
        encoder = load_encoder(registry, home.gems.id, ENV)
        score = evaluate_policy(registry, _zero_policy, ENV, episodes=6, dataset_id=expert_id)
    # by hand: the zero action decodes to the slate ranked at the box center, every step, for test users 0..5
    slate = encoder.gems.rank(encoder.center[None]).expand(6, 10)
    sim = make_simulator(ENV)
    sim.reset(torch.arange(6), TEST_SEED)
    returns = sum(sim.step(slate, oracle=False).reward.double() for _ in range(100))
    assert score.mean == pytest.approx(float(returns.mean()))
    assert score.sem == pytest.approx(float(returns.std()) / math.sqrt(6))
    ref_min, ref_max = metadata["ref_min_score"], metadata["ref_max_score"]
    assert score.normalised == pytest.approx(100 * (score.mean - ref_min) / (ref_max - ref_min))

    # the same policy as a TorchScript file (what d3rlpy's save_policy writes) and as module:function
    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 32)

    torch.jit.save(torch.jit.script(Zero()), str(tmp_path / "zero.pt"))
    (tmp_path / "my_policies.py").write_text(textwrap.dedent("""
        import numpy as np
        def zero(observation):
            return np.zeros((observation["latent"].shape[0], 32), dtype=np.float32)
        def wrong(observation):
            return np.zeros((3, 5))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    base = ["--home", str(home.settings.home), "evaluate"]
    for policy in (str(tmp_path / "zero.pt"), "my_policies:zero"):
        result = runner.invoke(app, base + [policy, "--env", ENV, "--episodes", "6", "--dataset", str(expert_id), "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["mean_return"] == pytest.approx(score.mean) and doc["normalised_score"] == pytest.approx(score.normalised)
    bad = runner.invoke(app, base + ["my_policies:wrong", "--env", ENV, "--episodes", "6"])
    assert bad.exit_code == 2 and "shape (6, 32)" in bad.output, bad.output
    other_env = runner.invoke(app, base + ["my_policies:zero", "--env", "diffuse_mix", "--dataset", str(expert_id)])
    assert other_env.exit_code == 2 and "not of diffuse_mix" in other_env.output, other_env.output


def test_the_gym_env_and_evaluate_give_the_same_returns(home, pooled):
    datasets, _ = pooled
    with open_registry(home.settings) as registry:
        score = evaluate_policy(registry, _zero_policy, ENV, episodes=3, dataset_id=datasets["medium"].id)
    env = slatectl.make_env(dataset=datasets["medium"].id, home=home.settings.home)
    returns = []
    for user in range(3):
        env.reset(seed=TEST_SEED) if user == 0 else env.reset()
        total, truncated = 0.0, False
        while not truncated:
            _, reward, _, truncated, _ = env.step(np.zeros(32, dtype=np.float32))
            total += float(reward)
        returns.append(total)
    assert score.mean == pytest.approx(np.mean(returns))


def test_relabel_recomputes_the_features_and_keeps_the_original(home, pooled):
    datasets, loaded = pooled
    source = datasets["medium"]
    with open_registry(home.settings) as registry:
        other = tiny_gems(registry, seed=2)
        relabelled = relabel_dataset(registry, source.id, str(other.id))
        arrays, metadata = load_npz(registry.dataset_path(relabelled.id))
        expected = encode_arrays(arrays, load_encoder(registry, other.id, ENV))
        assert registry.get_dataset(source.id).sha256 == source.sha256
        assert registry.dataset_path(source.id).is_file()  # checked against its SHA-256
        with pytest.raises(BadInput, match="not a GeMS"):
            relabel_dataset(registry, source.id, str(home.gems.parents[0]))
    original, _ = loaded["medium"]
    for key in original:
        if not key.endswith("/latent") or key == "agent/latent":
            np.testing.assert_array_equal(arrays[key], original[key])
    for key, values in expected.items():
        np.testing.assert_array_equal(arrays[key], values)
    assert not np.array_equal(arrays["observations/latent"], original["observations/latent"])
    assert metadata["relabelled_from"] == source.id and metadata["encoder"]["artifact_id"] == other.id
    assert (relabelled.quality, relabelled.checkpoint_id) == (source.quality, source.checkpoint_id)


def test_relabel_brings_a_first_layout_dataset_to_the_env_spaces(home, pooled, tmp_path):
    _, loaded = pooled
    arrays, metadata = loaded["expert"]
    # the first layout: the agent's belief and latent as observation and action, no final slate, uint8 flags
    first = {"observations/slate": arrays["observations/slate"], "observations/clicks": arrays["observations/clicks"],
             "observations/belief": arrays["agent/belief"], "actions/slate": arrays["actions/slate"],
             "actions/latent": arrays["agent/latent"], "rewards": arrays["rewards"],
             "terminals": arrays["terminals"].astype(np.uint8), "timeouts": arrays["timeouts"].astype(np.uint8),
             "episode_returns": arrays["episode_returns"], "final/clicks": arrays["final/clicks"],
             "final/user_state": arrays["final/user_state"], "infos/user_state": arrays["infos/user_state"],
             "infos/bored": arrays["infos/bored"]}
    old_metadata = {k: metadata[k] for k in ("env", "quality", "seed", "episodes", "checkpoint_id", "promotion_id")}
    first[METADATA_KEY] = np.frombuffer(json.dumps(old_metadata).encode(), dtype=np.uint8)
    write_npz(tmp_path / "old.npz", first)
    with open_registry(home.settings) as registry:
        old = registry.register_dataset(ENV, "expert", tmp_path / "old.npz", episodes=20, transitions=2000,
                                        return_mean=1.0, return_std=0.0, format="npz", seed=metadata["seed"],
                                        checkpoint_id=metadata["checkpoint_id"], promotion_id=metadata["promotion_id"],
                                        metadata=old_metadata)
        with pytest.raises(BadInput, match="old layout"):
            slatectl.make_env(dataset=old.id, home=home.settings.home)
        new = relabel_dataset(registry, old.id, str(home.gems.id))
        upgraded, new_metadata = load_npz(registry.dataset_path(new.id))
    assert set(upgraded) == set(arrays) and new_metadata["format_version"] == 2
    for key in arrays:
        np.testing.assert_array_equal(upgraded[key], arrays[key])


def test_collect_without_an_encoder_says_how_to_make_one(tmp_path):
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    refused = runner.invoke(app, home + ["collect", "--quality", "random", "--env", "diffuse_mix", "--episodes", "3"])
    assert refused.exit_code == 2 and "slatectl pretrain gems --env diffuse_mix" in refused.output, refused.output
    plain = runner.invoke(app, home + ["collect", "--quality", "random", "--env", "diffuse_mix", "--episodes", "3",
                                       "--encoder", "none", "--json"])
    assert plain.exit_code == 0, plain.output
    [row] = json.loads(plain.stdout)
    arrays, metadata = load_npz(row["path"])
    assert metadata["encoder"] is None and not any(k.endswith("/latent") for k in arrays)
    env = slatectl.make_env(dataset=row["id"], home=tmp_path / "home")
    assert env.action_space.shape == (10,) and set(env.observation_space.spaces) == {"slate", "clicks"}
    with pytest.raises(BadInput, match="no encoder"):
        slatectl.make_env(dataset=row["id"], home=tmp_path / "home", action="latent")


def test_promoting_the_same_checkpoint_for_medium_and_expert_needs_allow_same(home):
    runner = CliRunner()
    base = ["--home", str(home.settings.home), "ckpt", "promote", str(home.best.id), "--quality", "medium"]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "already promoted as expert" in refused.output and "--allow-same" in refused.output
    with open_registry(home.settings) as registry:
        assert registry.active_promotion(ENV, "medium").checkpoint_id == home.other.id  # nothing changed
    allowed = runner.invoke(app, base + ["--allow-same"])
    assert allowed.exit_code == 0, allowed.output
    with open_registry(home.settings) as registry:
        assert registry.active_promotion(ENV, "medium").checkpoint_id == home.best.id
        registry.promote_checkpoint(ENV, "medium", home.other.id)  # back as the other tests expect


def test_reference_max_score_falls_back_to_the_best_trained_checkpoint(tmp_path):
    fresh = trained_home(tmp_path / "home", promote_expert=False)
    with open_registry(fresh.settings) as registry:
        trained = [c for c in registry.list_checkpoints(env=ENV) if c.trained is not False]
        dataset = collect_dataset(registry, CollectRequest(ENV, Quality.MEDIUM, episodes=3, act=BehaviourMode.GREEDY))
    best = max(trained, key=lambda c: c.test_return_mean if c.test_return_mean is not None else c.val_return_mean)
    assert dataset.meta["ref_max_score"] == pytest.approx(best.test_return_mean if best.test_return_mean is not None
                                                          else best.val_return_mean)
    assert f"best trained checkpoint {best.id}" in dataset.meta["ref_max_source"]


def test_the_recorded_discount_is_every_agents_gamma():
    configs = Path(slatectl.__file__).parent.parent / "configs" / "agents"
    gammas = {path.stem: yaml.safe_load(path.read_text()).get("gamma") for path in configs.glob("*.yaml")}
    assert {g for name, g in gammas.items() if name != "random"} == {GAMMA}, gammas
