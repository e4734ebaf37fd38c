"""docs/offline.md's example, run as written: three datasets of one env pooled, IQL (d3rlpy) trained on
them, evaluated in `slatectl.make_env(dataset=…)` and by `slatectl evaluate`; then the Minari snippet."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offline_helpers import ENV, trained_home
from slatectl.cli import app

DOC = Path(__file__).resolve().parent.parent / "docs" / "offline.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_d3rlpy_loop_runs_and_scores_the_policy(tmp_path, monkeypatch, capsys):
    pytest.importorskip("d3rlpy", reason="d3rlpy is the `offline` extra (also in `dev`)")
    minari = pytest.importorskip("minari")
    home = trained_home(tmp_path / "home").settings.home
    runner = CliRunner()
    base = ["--home", str(home)]
    ids = []
    for quality in ("random", "medium", "expert"):
        result = runner.invoke(app, base + ["collect", "--quality", quality, "--env", ENV, "--episodes", "20", "--json"])
        assert result.exit_code == 0, result.output
        ids.append(json.loads(result.stdout)[0]["id"])
    assert ids == [1, 2, 3]  # the ids the example names

    monkeypatch.setenv("SLATECTL_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    loop, minari_snippet = _python_blocks()
    exec(compile(loop, "docs/offline.md", "exec"), {})
    printed = capsys.readouterr().out
    match = re.search(r"IQL: mean return ([\d.]+), normalised score (-?[\d.]+)", printed)
    assert match, printed
    assert (tmp_path / "iql_policy.pt").is_file()

    evaluated = runner.invoke(app, ["evaluate", "iql_policy.pt", "--env", ENV, "--dataset", "3", "--episodes", "100", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    score = json.loads(evaluated.stdout)
    assert score["normalised_score"] == pytest.approx(
        100 * (score["mean_return"] - score["ref_min_score"]) / (score["ref_max_score"] - score["ref_min_score"]))
    # 20 users in the example, 100 here, the same policy: the means differ by less than 4 standard errors of
    # the difference (the 20-user mean's SEM is about sqrt(5) times the 100-user one's)
    assert abs(score["mean_return"] - float(match.group(1))) < 4 * score["sem"] * 6 ** 0.5

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    exported = runner.invoke(app, ["collect", "--quality", "expert", "--env", ENV, "--episodes", "3", "--format", "minari"])
    assert exported.exit_code == 0, exported.output
    namespace: dict = {}
    exec(compile(minari_snippet, "docs/offline.md", "exec"), namespace)
    assert namespace["episode"].observations["latent"].shape == (101, 32) and namespace["episode"].actions.shape == (100, 32)
    assert namespace["env"].observation_space == namespace["data"].observation_space
    assert minari.load_dataset("slatectl/focused_topdown/expert-v1").total_episodes == 3
