"""Collection from promoted checkpoints: determinism, returns, ordering, refusals, and the user's 3 commands."""

import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from slatectl.registry import lookups, open_registry
from slatectl.cli import app
from slatectl.collect import load_npz
from slatectl.collect.collector import CollectRequest, collect_dataset, collect_datasets
from slatectl.domain import BehaviourMode, DatasetFormat, Quality
from slatectl.errors import BadInput
from slatectl.settings import Settings
from offline_helpers import trained_home

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = trained_home(tmp_path_factory.mktemp("collect") / "home")
    return home.settings, home.best, home.other


def _load(registry, dataset):
    arrays, _ = load_npz(registry.dataset_path(dataset.id))
    return arrays


def test_same_seed_gives_identical_files_and_consistent_arrays(trained):
    settings, best, _ = trained
    with open_registry(settings) as registry:
        greedy = dict(episodes=30, seed=5, act=BehaviourMode.GREEDY)
        a = collect_dataset(registry, CollectRequest("focused_topdown", Quality.EXPERT, batch_size=16, **greedy))
        b = collect_dataset(registry, CollectRequest("focused_topdown", Quality.EXPERT, batch_size=30, **greedy))
        c = collect_dataset(registry, CollectRequest("focused_topdown", Quality.EXPERT, episodes=30, seed=6, act=BehaviourMode.GREEDY))
        # the stochastic policy: the same seed and batch size give the same file, another seed another one
        d, e, f = (collect_dataset(registry, CollectRequest("focused_topdown", Quality.EXPERT, episodes=30, seed=s, batch_size=16))
                   for s in (5, 5, 6))
        arrays = _load(registry, a)
    assert a.sha256 == b.sha256 != c.sha256
    assert d.sha256 == e.sha256 != f.sha256 and d.sha256 != a.sha256
    assert arrays["rewards"].shape == (3000,) and arrays["observations/slate"].shape == (3000, 10)
    assert arrays["agent/belief"].shape == (3000, 20) and arrays["agent/latent"].shape == (3000, 20)
    assert arrays["observations/latent"].shape == (3000, 32) and arrays["actions/latent"].shape == (3000, 32)
    np.testing.assert_allclose(arrays["rewards"].reshape(30, 100).sum(axis=1), arrays["episode_returns"])

    # the observation at t+1 is the slate recommended at t
    np.testing.assert_array_equal(arrays["observations/slate"].reshape(30, 100, 10)[:, 1:], arrays["actions/slate"].reshape(30, 100, 10)[:, :-1])
    # episodes end only by the 100-step limit: a timeout on each last step, never a terminal
    assert arrays["timeouts"].reshape(30, 100)[:, -1].all() and arrays["timeouts"].sum() == 30
    assert not arrays["terminals"].any()


def test_load_npz_returns_the_arrays_and_the_decoded_metadata(trained):
    settings, best, _ = trained
    with open_registry(settings) as registry:
        dataset = collect_dataset(registry, CollectRequest("focused_topdown", Quality.EXPERT, episodes=4, seed=2))
        path = registry.dataset_path(dataset.id)
    arrays, metadata = load_npz(path)
    assert metadata["checkpoint_id"] == best.id and metadata["quality"] == "expert"
    # the acting policy is named the same in the file, the registry row and the lineage: the checkpoint's agent
    assert metadata["policy"] == dataset.policy == metadata["agent"] == "sac-topk-ideal"
    assert metadata["episodes"] == 4 and metadata["seed"] == 2 and metadata["env"] == "focused_topdown"
    assert "metadata_json" not in arrays
    with np.load(path) as raw:  # the same arrays as numpy reads them, and the same metadata by hand
        assert set(arrays) == set(raw.files) - {"metadata_json"}
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], raw[name])
        assert metadata == json.loads(raw["metadata_json"].tobytes().decode())
    assert arrays["rewards"].shape == (400,) and float(arrays["episode_returns"].mean()) == pytest.approx(dataset.return_mean)


def test_returns_match_validation_and_order_random_medium_expert(trained):
    settings, best, other = trained
    with open_registry(settings) as registry:
        datasets = {q: collect_dataset(registry, CollectRequest("focused_topdown", q, episodes=200, seed=1, batch_size=200,
                                                                act=BehaviourMode.GREEDY))
                    for q in Quality}
    expert, medium, random_ = datasets["expert"], datasets["medium"], datasets["random"]
    # different users than validation: 4 standard errors of the difference of two means
    tolerance = 4 * math.sqrt(expert.return_std**2 / 200 + best.val_return_std**2 / best.val_episodes)
    assert abs(expert.return_mean - best.val_return_mean) <= tolerance
    noise = 4 * math.sqrt(expert.return_std**2 / 200 + medium.return_std**2 / 200)
    assert random_.return_mean + noise < medium.return_mean <= expert.return_mean + noise


def test_missing_promotion_and_corrupted_checkpoint_are_refused(trained, tmp_path):
    settings, best, _ = trained
    with open_registry(settings) as registry:
        with pytest.raises(BadInput, match="no checkpoint is promoted as medium for diffuse_mix"):
            collect_dataset(registry, CollectRequest("diffuse_mix", Quality.MEDIUM, episodes=5))
        before = len(registry.list_datasets())
        path = registry.checkpoint_path(best.id)
        original = path.read_bytes()
        path.write_bytes(original[:-10] + b"0123456789")
        try:
            result = CliRunner().invoke(app, ["--home", str(settings.home), "collect", "--quality", "expert",
                                              "--env", "focused_topdown", "--episodes", "5"])
            assert result.exit_code == 2, result.output
            assert "sha" in result.output.lower() or "corrupt" in result.output.lower(), result.output
            assert len(registry.list_datasets()) == before
            path.unlink()
            missing = CliRunner().invoke(app, ["--home", str(settings.home), "collect", "--quality", "expert",
                                               "--env", "focused_topdown", "--episodes", "5", "--format", "minari"])
            assert missing.exit_code == 2, missing.output
            assert "missing" in missing.output.lower() or "not found" in missing.output.lower(), missing.output
            assert len(registry.list_datasets()) == before
        finally:
            path.write_bytes(original)


def test_the_users_three_commands_end_to_end(tmp_path):
    """mission.md's three commands with the issue's step counts; only the pretraining inputs are shrunk
    (the reference GeMS pretraining alone takes hours on a CPU)."""
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    small_inputs = ["--set", "logged.episodes=300", "--set", "gems.max_epochs=1", "--set", "gems.max_slates=5000"]
    # A random phase ending before the last save, so that checkpoint follows agent updates: random-phase
    # (untrained) checkpoints are never suggested for promotion.
    trained = runner.invoke(app, home + ["train", "sac-gems", "--env", "diffuse_topdown", "--steps", "2000",
                                         "--save-every", "1000", "--set", "training.random_steps=1980", *small_inputs])
    assert trained.exit_code == 0, trained.output
    listed = runner.invoke(app, home + ["ckpt", "list", "--env", "diffuse_topdown", "--json"])
    assert sorted(c["step"] for c in json.loads(listed.stdout)) == [1000, 2000], listed.output
    promoted = runner.invoke(app, home + ["ckpt", "promote", "--quality", "medium", "--yes"])
    assert promoted.exit_code == 0, promoted.output
    collected = runner.invoke(app, home + ["collect", "--quality", "medium", "--episodes", "1000"])
    assert collected.exit_code == 0, collected.output
    # The human output names the dataset in a sentence; the last line is its id alone (the command contract).
    dataset_id = re.search(r"^dataset (\d+): diffuse_topdown / medium", collected.stdout, re.M).group(1)
    lines = collected.stdout.strip().splitlines()
    assert lines[-1] == dataset_id and not any(line.strip().isdigit() for line in lines[:-1]), collected.stdout
    histogram = tmp_path / "returns.png"
    shown = runner.invoke(app, home + ["inspect", "dataset", dataset_id, "--json", "--plot", str(histogram)])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    kinds = [node["kind"] for node in doc["lineage"]]
    labels = " | ".join(node["label"] for node in doc["lineage"])
    assert kinds[:4] == ["dataset", "promotion", "checkpoint", "run"] and kinds.count("artifact") == 2, kinds
    assert "gems" in labels and "logged-data" in labels, labels
    assert doc["episodes"] == 1000 and doc["transitions"] == 100_000
    returns = doc["returns"]
    assert returns["min"] <= returns["p25"] <= returns["median"] <= returns["p75"] <= returns["max"]
    assert returns["mean"] == pytest.approx(doc["mean_return"])
    assert histogram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = runner.invoke(app, home + ["inspect", "dataset", dataset_id])
    assert "lineage" in table.stdout and "median" in table.stdout, table.output


def test_minari_export_loads_with_minari_and_matches_the_npz(trained, tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    settings, best, _ = trained
    with open_registry(settings) as registry:
        npz = collect_dataset(registry, CollectRequest("focused_topdown", Quality.MEDIUM, episodes=12, seed=9, batch_size=12))
        first = collect_dataset(registry, CollectRequest("focused_topdown", Quality.MEDIUM, episodes=12, seed=9, format=DatasetFormat.MINARI))
        second = collect_dataset(registry, CollectRequest("focused_topdown", Quality.RANDOM, episodes=3, format=DatasetFormat.MINARI))
        arrays = _load(registry, npz)
        random_return = registry.policy_return("focused_topdown", "random")[0]
        report = registry.verify()
        assert report.problems == [] and report.orphans == []
    assert first.format == "minari" and first.meta["minari"]["dataset_id"] == "slatectl/focused_topdown/medium-v1"
    assert second.meta["minari"]["dataset_id"] == "slatectl/focused_topdown/random-v1"

    dataset = minari.load_dataset("slatectl/focused_topdown/medium-v1")
    assert dataset.total_episodes == 12 and dataset.total_steps == 1200
    episodes = list(dataset.iterate_episodes())
    rewards = np.concatenate([e.rewards for e in episodes])
    np.testing.assert_allclose(rewards, arrays["rewards"])
    np.testing.assert_array_equal(np.concatenate([e.actions for e in episodes]), arrays["actions/latent"])
    np.testing.assert_array_equal(np.concatenate([e.observations["slate"][1:] for e in episodes]), arrays["actions/slate"])
    np.testing.assert_array_equal(np.stack([e.observations["latent"][-1] for e in episodes]), arrays["final/latent"])
    np.testing.assert_array_equal(np.concatenate([e.infos["agent_latent"][1:] for e in episodes]), arrays["agent/latent"])
    ep = episodes[0]
    assert ep.observations["slate"].shape == (101, 10) and ep.observations["latent"].shape == (101, 32)
    # one dtype table for the npz, Minari and the env (docs/offline.md)
    for key in ("slate", "clicks", "latent"):
        assert ep.observations[key].dtype == arrays[f"observations/{key}"].dtype, key
    assert ep.actions.dtype == arrays["actions/latent"].dtype == np.float32
    assert ep.rewards.dtype == arrays["rewards"].dtype == np.float32
    assert ep.truncations[-1] and not ep.truncations[:-1].any() and not ep.terminations.any()  # the time limit
    assert ep.infos["user_state"].shape == (101, 20) and ep.infos["bored"].shape[0] == 101

    # ref_min = the random policy's return, ref_max = the expert checkpoint's (test) return
    expert_return = best.test_return_mean if best.test_return_mean is not None else best.val_return_mean
    assert dataset.storage.metadata["ref_min_score"] == pytest.approx(random_return)
    assert dataset.storage.metadata["ref_max_score"] == pytest.approx(expert_return)
    normalized = minari.get_normalized_score(dataset, np.array([random_return, expert_return]))
    np.testing.assert_allclose(normalized, [0.0, 1.0])
    assert dataset.spec.env_spec.id == "slatectl/TopicRecDataset-v0"
    assert dataset.spec.env_spec.kwargs["env_name"] == "focused_topdown"
    assert dataset.spec.env_spec.max_episode_steps == 100  # the time limit that truncates every episode
    # the recovered env (and the eval env) is the dataset's own: its spaces, the dataset's users
    monkeypatch.setenv("SLATECTL_HOME", str(settings.home))
    for env in (dataset.recover_environment(), dataset.recover_environment(eval_env=True)):
        assert env.observation_space == dataset.observation_space and env.action_space == dataset.action_space
        observation, _ = env.reset(seed=9)
        for key in ("slate", "clicks"):
            np.testing.assert_array_equal(observation[key], ep.observations[key][0])
        # one row encoded alone against a block of rows: float32 rounding of the matrix products only
        np.testing.assert_allclose(observation["latent"], ep.observations["latent"][0], rtol=0, atol=1e-5)


def test_minari_export_works_with_the_default_relative_home(tmp_path, monkeypatch):
    """The default home `.slatectl` is relative: the scratch folder Minari builds in must not be joined twice."""
    minari = pytest.importorskip("minari")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLATECTL_HOME", raising=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "minari-datasets")  # relative too
    result = CliRunner().invoke(app, ["--home", ".slatectl", "collect", "--quality", "random", "--env", "focused_mix",
                                      "--episodes", "3", "--format", "minari", "--encoder", "none", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["minari_dataset_id"] == "slatectl/focused_mix/random-v1" and row["transitions"] == 300
    assert (tmp_path / "minari-datasets" / "slatectl" / "focused_mix" / "random-v1" / "data" / "main_data.hdf5").is_file()
    assert not any((tmp_path / ".slatectl" / "scratch").iterdir())  # the build folder is cleaned up
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari-datasets"))
    assert minari.load_dataset("slatectl/focused_mix/random-v1").total_episodes == 3


def test_several_datasets_overlap_writing_with_the_next_simulation_and_give_the_single_files(trained):
    settings, _, _ = trained
    requests = [CollectRequest("focused_topdown", Quality.MEDIUM, episodes=12, seed=2, batch_size=5),
                CollectRequest("focused_topdown", Quality.RANDOM, episodes=7, seed=2, batch_size=7),
                CollectRequest("focused_topdown", Quality.EXPERT, episodes=12, seed=2, batch_size=12)]
    progress: dict[str, list[int]] = {}

    def on_batch_for(request):
        return lambda done, ret: progress.setdefault(request.quality, []).append(done)

    with open_registry(settings) as registry:
        together = list(collect_datasets(registry, requests, on_batch_for))
        alone = [collect_dataset(registry, request) for request in requests]
        for dataset in together:  # every file is complete and its hash checks
            assert registry.dataset_path(dataset.id).is_file()
    assert [d.quality for d in together] == ["medium", "random", "expert"]
    assert [d.sha256 for d in together] == [d.sha256 for d in alone]
    assert len({d.sha256 for d in together}) == 3
    assert progress == {"medium": [5, 10, 12], "random": [7], "expert": [12]}


def test_collect_medium_parses_the_quality_once_at_the_option(trained, monkeypatch):
    """`--quality medium` is parsed by the option parser into `Quality.MEDIUM`; the promotion lookups, the
    reference scores and the dataset row take that member as it is (the registry's string parser is never
    called) and the row and the file's metadata hold the plain text."""
    settings, _, other = trained
    parsed = []
    real = lookups.parse_quality
    monkeypatch.setattr(lookups, "parse_quality", lambda *a, **k: parsed.append(a) or real(*a, **k))
    result = CliRunner().invoke(app, ["--home", str(settings.home), "collect", "--quality", "medium", "--env",
                                      "focused_topdown", "--episodes", "2", "--batch", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert parsed == []
    (summary,) = json.loads(result.stdout)
    with open_registry(settings) as registry:
        dataset = registry.get_dataset(summary["id"])
        _, metadata = load_npz(registry.dataset_path(dataset.id))
    assert dataset.checkpoint_id == other.id and type(dataset.quality) is str and dataset.quality == "medium"
    assert metadata["quality"] == "medium"
