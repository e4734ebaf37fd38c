"""What a person reads at 80 columns: names, ids, hashes and paths whole (each on one line), nothing said
twice, no stray lines, clear refusals before any work, and env names that tab-complete.

The registry here holds the longest names the tool has (agent `reinforce-softmax`, env `focused_topdown`),
a 100,000-step checkpoint and a promotion note, so every table has to give way somewhere at 80 columns.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from slatectl.agents import trainable_agents
from slatectl.cli import app
from slatectl.cli import inspect_cmd
from slatectl.configs import env_names
from slatectl.registry import open_registry
from slatectl.registry.db import SCHEMA_VERSION as SCHEMA

runner = CliRunner()
COLUMNS_80 = {"COLUMNS": "80"}
LONGEST_AGENT = max(trainable_agents(), key=len)  # reinforce-softmax, 17 characters


@pytest.fixture
def registry_home(sqlite_settings):
    """Two runs (the longest agent name on a 15-character env, and sac-gems), checkpoints up to step
    100,000 with test returns (one untrained, two with the same file), promotions (one with a long note,
    one superseded) and a dataset whose metadata carries the run's config hash."""
    with open_registry(sqlite_settings) as reg:
        logged = reg.register_artifact("logged-data", "focused_topdown", b"logged", config={"episodes": 10})
        long_run = reg.start_run(LONGEST_AGENT, "focused_topdown", 58407201, {"training": {"max_steps": 100_000}},
                                 command="slatectl train reinforce-softmax --env focused_topdown", inputs=[logged.id])
        for step, value, trained in [(2_000, 182.25, False), (50_000, 233.625, True), (100_000, 241.5, True)]:
            checkpoint = reg.register_checkpoint(long_run.id, step, {"w": torch.full((3,), value)}, val_return_mean=value,
                                                 val_return_std=12.25, val_episodes=200, trained=trained)
            reg.record_test_return(checkpoint.id, value + 1.0, 11.5, 500)
        same_file = reg.register_checkpoint(long_run.id, 100_001, {"w": torch.full((3,), 241.5)}, val_return_mean=241.5,
                                            val_return_std=12.25, val_episodes=200, trained=True)
        other_run = reg.start_run("sac-gems", "diffuse_divpen", 58407202, {"training": {}}, command="slatectl train")
        reg.register_checkpoint(other_run.id, 1_000, {"w": torch.zeros(3)}, val_return_mean=40.0, val_return_std=1.0,
                                val_episodes=200, trained=True)
        reg.record_policy_return("focused_topdown", "random", 34.0)
        first = reg.promote_checkpoint("focused_topdown", "medium", 2,
                                       note="half-way between the random policy and the best checkpoint, as suggested")
        medium = reg.promote_checkpoint("focused_topdown", "medium", 3)
        reg.promote_checkpoint("diffuse_divpen", "expert", 5)
        dataset = reg.register_dataset(
            "focused_topdown", "medium", b"not an npz", episodes=1_000, transitions=100_000, return_mean=240.0,
            return_std=10.0, format="npz", seed=0, checkpoint_id=3, promotion_id=medium.id,
            metadata={"agent": LONGEST_AGENT, "policy": LONGEST_AGENT, "run_id": long_run.id,
                      "config_hash": long_run.config_hash})
        facts = {"run": long_run, "dataset": dataset, "path": reg.dataset_path(dataset.id), "same_file": same_file,
                 "superseded": first}
    return sqlite_settings, facts


def invoke(settings, *args):
    return runner.invoke(app, ["--home", str(settings.home), "--registry-url", settings.registry_url, *args],
                         env=COLUMNS_80)


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def assert_whole_on_one_line(text: str, *values: str) -> None:
    for value in values:
        assert any(value in line for line in lines_of(text)), f"{value!r} is not whole on one line:\n{text}"


def assert_fits_80(text: str, allowed_longer: tuple[str, ...] = ()) -> None:
    """Every line fits 80 columns, except lines that are one long token printed whole (a path) on purpose."""
    for line in lines_of(text):
        if len(line.rstrip()) > 80:
            assert line.strip() in allowed_longer, f"{len(line.rstrip())} columns: {line!r}"


def test_env_list_shows_every_env_name_whole():
    result = runner.invoke(app, ["env", "list"], env=COLUMNS_80)
    assert result.exit_code == 0, result.output
    assert_fits_80(result.stdout)
    for name in env_names():
        assert any(re.search(rf"(^|\s){name}(\s|$)", line) for line in lines_of(result.stdout)), (name, result.stdout)


def test_inspect_overview_shows_agent_and_env_names_whole(registry_home):
    settings, facts = registry_home
    result = invoke(settings, "inspect")
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    run_line = next(line for line in lines if re.match(rf"\s*{facts['run'].id} ", line))
    assert LONGEST_AGENT in run_line and "focused_topdown" in run_line
    assert any("diffuse_divpen" in line and "sac-gems" in line for line in lines)
    dataset_line = next(line for line in lines if re.match(rf"\s*{facts['dataset'].id} focused_topdown ", line))
    assert LONGEST_AGENT in dataset_line  # the dataset's policy: the agent that acted
    assert "…" not in result.stdout  # nothing cut; columns that do not fit are named as left out
    assert "not shown at 80 columns" in result.stdout
    assert_whole_on_one_line(result.stdout, str(settings.artifacts_dir), settings.registry_url)
    assert_fits_80(result.stdout, allowed_longer=(f"Artifacts in {settings.artifacts_dir}",
                                                  f"Registry {settings.registry_url} (schema v{SCHEMA})"))


def test_inspect_dataset_prints_path_sha256_and_config_hash_whole(registry_home):
    settings, facts = registry_home
    dataset = facts["dataset"]
    result = invoke(settings, "inspect", "dataset", str(dataset.id))
    assert result.exit_code == 0, result.output
    assert len(str(facts["path"])) > 60  # a real store path: too long for a table cell beside its key
    assert_whole_on_one_line(result.stdout, str(facts["path"]), dataset.sha256, facts["run"].config_hash)
    assert_fits_80(result.stdout, allowed_longer=(str(facts["path"]),))


def test_inspect_run_prints_liveness_once_and_the_config_hash_whole(registry_home):
    settings, facts = registry_home
    result = invoke(settings, "inspect", "run", str(facts["run"].id))
    assert result.exit_code == 0, result.output
    assert sum(1 for line in lines_of(result.stdout) if line.split()[:1] == ["liveness"]) == 1, result.stdout
    assert_whole_on_one_line(result.stdout, facts["run"].config_hash, LONGEST_AGENT, "100,000")
    assert_fits_80(result.stdout)


def test_ckpt_history_does_not_break_env_names(registry_home):
    settings, facts = registry_home
    result = invoke(settings, "ckpt", "history")
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    for promotion_id, env in ((1, "focused_topdown"), (2, "focused_topdown"), (3, "diffuse_divpen")):
        assert any(re.match(rf"\s*{promotion_id} {env} ", line) for line in lines), (promotion_id, result.stdout)
    # the note is free text: wrapped at 80 columns, every word of it kept
    shown = " ".join(result.stdout.split())
    assert all(word in shown for word in facts["superseded"].note.split())
    assert_fits_80(result.stdout)


def test_promote_candidates_show_headers_and_steps_whole(registry_home):
    settings, facts = registry_home
    result = invoke(settings, "ckpt", "promote", "--quality", "expert", "--env", "focused_topdown")
    assert result.exit_code == 2  # no terminal and no --yes: it shows the candidates, then refuses
    header = next(line for line in lines_of(result.stdout) if " step " in line)
    for column in ("id", "run", "agent", "step", "val return", "%best", "same as"):
        assert column in header, header
    for step in ("2,000", "50,000", "100,000", "100,001"):
        assert any(step in line and LONGEST_AGENT in line for line in lines_of(result.stdout)), step
    assert "…" not in result.stdout
    assert_fits_80(result.stdout)


def test_the_expert_rule_says_it_ranks_trained_checkpoints(registry_home):
    settings, _ = registry_home
    result = invoke(settings, "ckpt", "promote", "--quality", "expert", "--env", "focused_topdown")
    # the untrained checkpoint (182.25) is not the best; still the rule says what it compares
    assert "highest validation return among trained checkpoints (241.5" in " ".join(result.stdout.split())


def test_ckpt_list_with_an_unknown_agent_names_the_known_ones(registry_home):
    settings, _ = registry_home
    result = invoke(settings, "ckpt", "list", "--agent", "nosuch")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown agent 'nosuch'" in result.stderr
    assert all(name in result.stderr for name in trainable_agents())
    assert invoke(settings, "ckpt", "promote", "--quality", "expert", "--agent", "nosuch", "--yes").exit_code == 2
    # a known agent without checkpoints is not an error: an empty listing
    assert json.loads(invoke(settings, "ckpt", "list", "--agent", "slateq", "--json").stdout) == []


def test_help_texts_say_what_the_registry_commands_do():
    top = runner.invoke(app, ["--help"], env=COLUMNS_80).stdout
    commands = " ".join(top[top.index("Commands:"):].split())
    registry_help = commands[commands.index(" registry "):]
    assert all(word in registry_help for word in ("verify", "back it up", "restore", "garbage")), registry_help
    restore = runner.invoke(app, ["registry", "restore", "--help"], env=COLUMNS_80).stdout
    assert "Make a backup the registry" not in restore and "Restore the registry from a backup" in " ".join(restore.split())


def complete(words: str) -> list[str]:
    result = runner.invoke(app, [], prog_name="slatectl",
                           env={"_SLATECTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_env_names_tab_complete():
    focused = [name for name in env_names() if name.startswith("focused")]
    assert complete("slatectl ckpt list --env foc") == focused
    assert complete("slatectl env show diffuse_t") == ["diffuse_topdown"]
    assert complete("slatectl collect --quality random --env ") == [*env_names(), "all"]
    assert complete("slatectl train sac-gems --env focused_topdown,diffuse_t") == ["focused_topdown,diffuse_topdown"]


def test_a_bad_choice_is_one_plain_sentence():
    result = runner.invoke(app, ["collect", "--quality", "bogus"])
    assert result.exit_code == 2
    assert "Invalid value for '--quality': 'bogus' is not one of 'random', 'medium', 'expert'." in result.output
    assert "Value error" not in result.output


def test_collect_refuses_an_unpromoted_quality_before_any_work(sqlite_settings):
    result = invoke(sqlite_settings, "collect", "--quality", "medium", "--env", "focused_topdown")
    assert result.exit_code == 2
    assert "no checkpoint is promoted as medium for focused_topdown" in result.stderr
    # the refusal is the only thing said: no device line, no progress bar
    assert "collecting" not in result.output and "focused_topdown/medium" not in result.output
    assert lines_of(result.stderr.strip())[0].startswith("error:") and result.stdout == ""


def test_collect_output_names_the_dataset_and_ends_with_its_id(sqlite_settings):
    args = ("collect", "--quality", "random", "--env", "focused_topdown", "--episodes", "3", "--encoder", "none")
    human = invoke(sqlite_settings, *args)
    assert human.exit_code == 0, human.output
    lines = lines_of(human.stdout)
    # the contract: the last stdout line is the id alone, for scripts; no other bare id line
    assert lines[-1].strip() == "1" and not any(line.strip().isdigit() for line in lines[:-1]), human.stdout
    assert re.search(r"^dataset 1: focused_topdown / random, 3 episodes", human.stdout, re.M), human.stdout
    listed = invoke(sqlite_settings, *args, "--json")
    assert [d["id"] for d in json.loads(listed.stdout)] == [2]  # scripts take the id from --json


def test_learning_curve_marks_untrained_checkpoints_and_draws_reference_levels(registry_home, monkeypatch, tmp_path):
    settings, facts = registry_home
    computed = []
    monkeypatch.setattr(inspect_cmd, "random_return_fn", lambda env: computed.append(("random", env)) or 0.0)
    monkeypatch.setattr(inspect_cmd, "oracle_return_fn", lambda env: computed.append(("oracle", env)) or 321.0)
    drawn = {}
    monkeypatch.setattr(inspect_cmd, "plot_learning_curve",
                        lambda run, checkpoints, validations, promotions, path, reference:
                        drawn.update(figure=inspect_cmd_figure(run, checkpoints, validations, promotions, reference)))
    result = invoke(settings, "inspect", "run", str(facts["run"].id), "--plot", str(tmp_path / "curve.png"))
    assert result.exit_code == 0, result.output
    # the registered random return (34) is used; only the oracle is simulated
    assert computed == [("oracle", "focused_topdown")]
    axes = drawn["figure"].axes[0]
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "untrained checkpoint (random phase, no update yet)" in labels and "best trained" in labels
    assert "random policy 34.0" in labels and "short-term oracle 321.0" in labels
    levels = sorted(line.get_ydata()[0] for line in axes.get_lines() if len(set(line.get_ydata())) == 1
                    and list(line.get_xdata()) == [0, 1])
    assert levels == [34.0, 321.0]
    by_label = {collection.get_label(): collection.get_offsets().tolist() for collection in axes.collections
                if collection.get_label() and not collection.get_label().startswith("_")}
    assert by_label["untrained checkpoint (random phase, no update yet)"] == [[2_000, 182.25]]
    assert [step for step, _ in by_label["saved checkpoint"]] == [50_000, 100_000, 100_001]
    assert by_label["best trained"] == [[100_000, 241.5]]  # earliest of the equal best


def inspect_cmd_figure(run, checkpoints, validations, promotions, reference):
    from slatectl.cli.plots import learning_curve_figure

    return learning_curve_figure(run, checkpoints, validations, promotions, reference)


def _checkpoint(id_, step, value, trained):
    from slatectl.registry import Checkpoint

    return Checkpoint(id=id_, run_id=1, env="focused_topdown", agent="sac-gems", step=step, val_return_mean=value,
                      val_return_std=1.0, val_episodes=100, storage_key=f"checkpoint/{id_}.pt", size=1,
                      sha256=str(id_), trained=trained)


# The README's main job as the issue measured it: untrained 82.3 at step 500, then 54.2 and 63.6.
QUICKSTART = [(1, 500, 82.3, False), (2, 1000, 54.2, True), (3, 1500, 63.6, True)]


def test_promote_says_why_an_untrained_checkpoint_can_lead():
    from slatectl.registry import suggest_from

    suggestion = suggest_from([_checkpoint(*c) for c in QUICKSTART], "medium", random_return=30.0)
    (warning,) = [w for w in suggestion.warnings if "untrained" in w]
    assert ("untrained checkpoint 1 (step 500) has a higher validation return (82.3) than every trained "
            "checkpoint (best: 63.6, checkpoint 3)") in warning
    assert "expected early in training" in warning and "never suggested" in warning
    assert suggestion.suggested.id in (2, 3)  # still never the untrained one
    # no such note when training has passed its start
    ahead = suggest_from([_checkpoint(1, 500, 50.0, False), _checkpoint(2, 1000, 54.2, True)], "expert")
    assert not any("higher validation return" in w for w in ahead.warnings)


def test_train_summary_marks_untrained_checkpoints_and_explains_a_lead(monkeypatch):
    from rich.console import Console

    from slatectl.cli import train_cmd
    from slatectl.train.evaluation import TestResult
    from slatectl.train.loop import TrainResult

    console = Console(width=80, record=True)
    monkeypatch.setattr(train_cmd, "console", console)
    checkpoints = [_checkpoint(*c) for c in QUICKSTART]
    tests = [TestResult(c.id, c.step, c.id == 1, c.val_return_mean, c.val_return_mean + 1, 5.0, 200) for c in checkpoints]
    train_cmd.render_result(TrainResult(run_id=1, checkpoints=checkpoints, tests=tests))
    text = console.export_text()
    rows = {line.split()[0]: line for line in lines_of(text) if line.split()[:1] in (["1"], ["2"], ["3"])}
    assert "untrained" in rows["1"] and "untrained" not in rows["2"] + rows["3"]
    assert "Note: untrained checkpoint 1 (step 500)" in " ".join(text.split())
