"""`slatectl env ...` through Typer's CliRunner: output contract and exit codes."""

import json

import numpy as np
import torch
from typer.testing import CliRunner

from slatectl.cli import app

runner = CliRunner()


def test_env_list_json_has_the_six_envs():
    result = runner.invoke(app, ["env", "list", "--json"])
    assert result.exit_code == 0, result.output
    envs = json.loads(result.stdout)
    assert [e["name"] for e in envs] == ["focused_topdown", "focused_mix", "focused_divpen",
                                         "diffuse_topdown", "diffuse_mix", "diffuse_divpen"]
    assert {e["name"]: e["diversity_penalty"] for e in envs}["diffuse_divpen"] == 3.0


def test_env_show_and_rollout_json():
    shown = json.loads(runner.invoke(app, ["env", "show", "focused_mix", "--json"]).stdout)
    assert shown["click_model"] == "mixPBM" and shown["offset"] == 0.28
    result = runner.invoke(app, ["env", "rollout", "focused_topdown", "--policy", "random", "--episodes", "50", "--seed", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"env", "policy", "episodes", "seed", "device", "mean_return", "std_return", "sem_return", "user_steps_per_s"}
    assert doc["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    assert doc["episodes"] == 50 and 15 < doc["mean_return"] < 55


def test_rollout_with_embeddings_file(tmp_path):
    table = np.random.default_rng(0).random((1000, 20)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    path = tmp_path / "table.npy"
    np.save(path, table)
    result = runner.invoke(app, ["env", "rollout", "focused_topdown", "--policy", "oracle", "--episodes", "8", "--item-embeddings", str(path), "--json"])
    assert result.exit_code == 0, result.output


def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path):
    bad_table = tmp_path / "bad.npy"
    np.save(bad_table, np.zeros((10, 3), dtype=np.float32))
    npz_as_npy = tmp_path / "archive.npy"  # an .npz archive renamed .npy
    np.savez(tmp_path / "archive.npz", table=np.zeros((1000, 20), dtype=np.float32))
    (tmp_path / "archive.npz").rename(npz_as_npy)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    cases = [
        (["env", "show", "nowhere"], "unknown environment"),
        (["env", "rollout", "nowhere", "--policy", "random"], "unknown environment"),
        (["env", "rollout", "focused_topdown", "--policy", "greedy"], "'greedy' is not one of 'random', 'oracle', 'eps-oracle'"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--item-embeddings", str(npz_as_npy)], ".npz archive"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--item-embeddings", str(empty)], "No data left in file"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--seed", str(2**64)], "--seed"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--seed", "-1"], "--seed"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--epsilon", "nan"], "--epsilon"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--episodes", str(10**20)], "--episodes"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--episodes", "0"], "--episodes"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--batch", "-3"], "--batch"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--item-embeddings", str(bad_table)], "expected a 1000×20"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--item-embeddings", str(tmp_path / "missing.npy")], "does not exist"),
        (["env", "rollout", "focused_topdown", "--policy", "random", "--episodes", "many"], "--episodes"),
    ]
    for args, fragment in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "slatectl" in result.stdout
