"""`slatectl.lightning.RegistryCheckpoint`: a plain Lightning Trainer's checkpoints in the registry, shown
and promoted by the CLI like slatectl's own; docs/lightning.md's example runs as written."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.errors import BadInput
from slatectl.lightning import RegistryCheckpoint, json_safe
from slatectl.registry import RunStatus, open_registry

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


class Scorer(pl.LightningModule):
    """y ≈ x·w; logs `val_loss` (MSE) and `val_score` (= −MSE, higher is better) on validation."""

    def __init__(self, env: str | None = "diffuse_mix", seed: int = 3, lr: float = 0.01, fail_at: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.linear = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at is not None and self.global_step == self.hparams.fail_at:
            raise RuntimeError("boom at the fail step")
        x, y = batch
        return torch.nn.functional.mse_loss(self.linear(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.linear(x), y)
        self.log("val_loss", loss)
        self.log("val_score", -loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data(rows: int = 48, batch_size: int = 4):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 3, generator=generator)
    y = x @ torch.tensor([[2.0], [-1.0], [0.5]])
    return DataLoader(TensorDataset(x, y), batch_size=batch_size), DataLoader(TensorDataset(x[:16], y[:16]), batch_size=16)


def fit(module: pl.LightningModule, callback: RegistryCheckpoint, epochs: int = 2, **trainer_args) -> pl.Trainer:
    train, val = data()
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         **trainer_args)
    trainer.fit(module, train, val)
    return trainer


def val_mse(state: dict[str, torch.Tensor]) -> float:
    """The validation MSE of stored weights, computed here without Lightning."""
    _, val = data()
    x, y = next(iter(val))
    prediction = x @ state["linear.weight"].T + state["linear.bias"]
    return float(((prediction - y) ** 2).mean())


def invoke(settings, *args):
    return runner.invoke(app, ["--home", str(settings.home), "--registry-url", settings.registry_url, *args])


# -- the documented example ------------------------------------------------------------------------------


def doc_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "lightning.md").read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow
def test_the_documented_example_registers_promotable_checkpoints(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SLATECTL_HOME", str(home))  # the callback finds the registry as the CLI does
    monkeypatch.delenv("SLATECTL_REGISTRY_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_code(), "docs/lightning.md", "exec"), namespace)
    callback = namespace["callback"]
    x_val, y_val = namespace["x"][:64], namespace["y"][:64]

    listed = runner.invoke(app, ["ckpt", "list", "--env", "focused_topdown", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert [r["id"] for r in rows] == callback.checkpoint_ids
    assert {(r["agent"], r["run_id"]) for r in rows} == {("ToyScorer", callback.run_id)}
    with open_registry(home=home) as reg:
        for row in rows:  # the stored weights (hash-checked, weights_only) give back the recorded value
            state = reg.load_checkpoint_state(row["id"])
            mse = float(torch.nn.functional.mse_loss(x_val @ state["linear.weight"].T + state["linear.bias"], y_val))
            assert row["val_return"] == pytest.approx(-mse, rel=1e-5)
        run = reg.get_run(callback.run_id)
        assert (run.env, run.seed, run.status) == ("focused_topdown", 7, RunStatus.FINISHED.value)
        assert run.config["lightning"]["val_return"] == "-val_loss" and run.config["hparams"]["lr"] == 0.01
    best = max(rows, key=lambda r: r["val_return"])
    assert [r["best"] for r in rows] == [r is best for r in rows]

    promoted = runner.invoke(app, ["ckpt", "promote", "--env", "focused_topdown", "--quality", "expert", "--yes"])
    assert promoted.exit_code == 0, promoted.output
    history = json.loads(runner.invoke(app, ["ckpt", "history", "--json"]).stdout)
    assert [(h["quality"], h["checkpoint_id"], h["active"]) for h in history] == [("expert", best["id"], True)]
    shown = json.loads(runner.invoke(app, ["inspect", "run", str(callback.run_id), "--json"]).stdout)
    assert [v["step"] for v in shown["validations"]] == [20, 40, 60]
    assert [c["id"] for c in shown["checkpoints"]] == callback.checkpoint_ids


# -- the callback's behaviour ------------------------------------------------------------------------------


def test_validation_saves_record_the_monitored_value_as_is_with_mode_max(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        callback = RegistryCheckpoint(monitor="val_score", mode="max", registry=reg)
        fit(Scorer(), callback, epochs=3)
        checkpoints = reg.list_checkpoints(run_id=callback.run_id)
        run = reg.get_run(callback.run_id)
    assert [c.step for c in checkpoints] == [12, 24, 36]  # 48 rows / batch 4, validated every epoch
    with open_registry(sqlite_settings) as reg:
        for c in checkpoints:
            assert c.val_return_mean == pytest.approx(-val_mse(reg.load_checkpoint_state(c.id)), rel=1e-5)
            assert (c.episodes, c.env_steps, c.trained) == (None, None, True)
    assert (run.agent, run.env, run.seed) == ("Scorer", "diffuse_mix", 3)
    listed = json.loads(invoke(sqlite_settings, "ckpt", "list", "--env", "diffuse_mix", "--json").stdout)
    assert [r["val_return"] for r in listed] == [c.val_return_mean for c in checkpoints]


def test_step_saves_carry_the_validation_of_their_weights(sqlite_settings):
    # Saves every 6 steps; validation every epoch (12 steps): step 12's save waits for that validation.
    with open_registry(sqlite_settings) as reg:
        callback = RegistryCheckpoint(monitor="val_loss", mode="min", every_n_train_steps=6, registry=reg)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(Scorer(), callback, epochs=2)
        checkpoints = {c.step: c for c in reg.list_checkpoints(run_id=callback.run_id)}
        validations = {v.step: v.return_mean for v in reg.validations(callback.run_id)}
        states = {step: reg.load_checkpoint_state(c.id) for step, c in checkpoints.items()}
    # Step 6 comes before any validation: skipped with a warning, never registered without a return.
    assert any("has not been logged yet at step 6" in str(w.message) for w in caught)
    assert sorted(checkpoints) == [12, 18, 24] and sorted(validations) == [12, 24]
    for step in (12, 24):  # validated weights: the checkpoint's return is −(its own weights' val MSE)
        assert checkpoints[step].val_return_mean == pytest.approx(-val_mse(states[step]), rel=1e-5)
        assert checkpoints[step].val_return_mean == pytest.approx(validations[step])
    # Step 18 has no validation of its own: it carries the newest one (step 12's), as ModelCheckpoint reads it.
    assert checkpoints[18].val_return_mean == checkpoints[12].val_return_mean
    assert states[18]["linear.weight"].ne(states[12]["linear.weight"]).any()


def test_a_run_passed_in_gets_the_checkpoints(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        run = reg.start_run("my-ranker", "focused_mix", 11, {"note": "started by hand"}, command="test")
        callback = RegistryCheckpoint(monitor="val_score", registry=reg, run_id=run.id)
        fit(Scorer(env=None), callback, epochs=1)
        assert [c.run_id for c in reg.list_checkpoints()] == [run.id]
        assert reg.get_run(run.id).status == RunStatus.FINISHED.value
        assert len(reg.list_runs()) == 1


def test_a_failing_fit_marks_the_run_failed_and_keeps_its_checkpoints(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        callback = RegistryCheckpoint(monitor="val_score", registry=reg)
        with pytest.raises(RuntimeError, match="boom"):
            fit(Scorer(fail_at=15), callback, epochs=3)
        run = reg.get_run(callback.run_id)
        assert run.status == RunStatus.FAILED.value and "boom at the fail step" in run.error
        assert [c.step for c in reg.list_checkpoints(run_id=run.id)] == [12]


def test_a_module_without_an_env_is_refused_before_any_row(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        with pytest.raises(BadInput, match="needs the run's environment"):
            fit(Scorer(env=None), RegistryCheckpoint(monitor="val_score", registry=reg), epochs=1)
        with pytest.raises(BadInput, match="unknown environment 'cartpole'"):
            fit(Scorer(env="cartpole"), RegistryCheckpoint(monitor="val_score", registry=reg), epochs=1)
        assert reg.list_runs() == [] and reg.list_checkpoints() == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(monitor=""), "needs monitor"),
    (dict(monitor="val_loss", mode="lowest"), "mode must be 'min' or 'max'"),
    (dict(monitor="val_loss", every_n_train_steps=0), "every_n_train_steps must be"),
    (dict(monitor="val_loss", every_n_train_steps=None, save_on_validation=False), "would never save"),
    (dict(monitor="val_loss", env="focused"), "unknown environment 'focused'"),
    (dict(monitor="val_loss", seed=-1), r"seed must be a whole number in \[0, 2\^63\), got -1"),
    (dict(monitor="val_loss", seed="seven"), "seed must be a whole number"),
    (dict(monitor="val_loss", seed=2.5), "seed must be a whole number"),
])
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(BadInput, match=message):
        RegistryCheckpoint(**kwargs)


def test_a_non_finite_metric_is_refused():
    class Trainer:
        callback_metrics = {"val_loss": torch.tensor(float("nan"))}
        global_step = 4

    with pytest.raises(BadInput, match="must be finite"):
        RegistryCheckpoint(monitor="val_loss").monitored_value(Trainer())


def test_hyper_parameters_are_stored_json_safe():
    safe = json_safe({"layers": (2, 3), "path": Path("/x"), "nan": float("nan"), "nested": {"f": torch.nn.ReLU()}})
    assert json.loads(json.dumps(safe)) == {"layers": [2, 3], "path": repr(Path("/x")), "nan": "nan",
                                            "nested": {"f": "ReLU()"}}


def test_resuming_the_trainer_from_its_own_checkpoint_continues_the_registry_run(sqlite_settings, tmp_path):
    with open_registry(sqlite_settings) as reg:
        first = RegistryCheckpoint(monitor="val_score", registry=reg)
        trainer = fit(Scorer(), first, epochs=1)
        trainer.save_checkpoint(tmp_path / "lightning.ckpt")  # the callback's run id travels in it
        trainer.validate(trainer.lightning_module, data()[1], verbose=False)  # after fit: no run to record in
        resumed = RegistryCheckpoint(monitor="val_score", registry=reg)
        train, val = data()
        pl.Trainer(max_epochs=2, callbacks=[resumed], logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0).fit(
            Scorer(), train, val, ckpt_path=tmp_path / "lightning.ckpt")
        assert resumed.run_id == first.run_id and len(reg.list_runs()) == 1
        assert [c.step for c in reg.list_checkpoints(run_id=first.run_id)] == [12, 24]
        assert [v.step for v in reg.validations(first.run_id)] == [12, 24]
        assert reg.get_run(first.run_id).status == RunStatus.FINISHED.value


def test_a_module_without_hyper_parameters_gets_the_defaults(monkeypatch):
    class Bare(pl.LightningModule):
        pass

    monkeypatch.setenv("PL_GLOBAL_SEED", "42")  # what seed_everything(42) leaves
    agent, env, seed, config = RegistryCheckpoint(monitor="val_loss", env="diffuse_divpen").describe_run(Bare())
    assert (agent, env, seed, config["hparams"]) == ("Bare", "diffuse_divpen", 42, {})
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert RegistryCheckpoint(monitor="m", env="diffuse_divpen", agent="mine").describe_run(Bare())[::2] == ("mine", 0)
