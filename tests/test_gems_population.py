"""Stacked GeMS pretraining (`slatectl.pretrain.gems_train`, K ≥ 2): member k of a stack is its solo
`train_gems` run (a stack of one) and matches an independent writing of the objective on the solo model
(`gems_oracle`) up to float rounding; members are independent; stacks are grouped by size;
`ensure_gems_population` reuses artifacts and registers solo-form ones; `pretrain gems --env all`."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from typer.testing import CliRunner

from host_reads import count_host_reads
from slatectl.cli import app
from slatectl.harness import seeded
from gems_oracle import reference_terms
from slatectl.pretrain.gems_stack import GeMSStack, member_noise
from slatectl.pretrain.gems_train import (GeMSConfig, GeMSMember, _initial_models, build_gems, stack_groups, train_gems,
                                          train_gems_population, train_stacked_gems)
from slatectl.pretrain.logged import LoggedDataConfig
from slatectl.registry import open_registry
from slatectl.sim.config import env_names
from slatectl.sim.factory import make_env
from slatectl.train import inputs
from synthetic_logged import prototype_slates

CPU = torch.device("cpu")


def _logged(episodes: int, seed: int, steps: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    slates, clicks, _ = prototype_slates(episodes=episodes, steps=steps, seed=seed)
    return slates, clicks


def _member(seed: int, data_seed: int, episodes: int = 30, **config) -> GeMSMember:
    slates, clicks = _logged(episodes, data_seed)
    return GeMSMember(slates, clicks, GeMSConfig(**config), seed)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _assert_adam_steps_agree(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    """Weights after a few Adam steps from equal weights, gradients equal to rounding: within 1e-5 except
    at most 0.1 % of the elements, all within 1e-4 (docs/population.md's criterion for stacked agents).
    Why the exceptions: Adam's normalised step lr·m/(√v + eps) turns a gradient of the order of eps, or a
    ReLU input within rounding of zero (which switches one row's term in one kernel and not the other),
    into a step difference up to lr = 1e-3; measured here: ≤ 98 of 523,570 elements above 1e-5, all
    ≤ 5.8e-5. A wrong noise draw, batch order or optimizer moves most weights by ~lr."""
    assert ours.keys() == theirs.keys()
    differences = torch.cat([(ours[k] - theirs[k]).abs().flatten() for k in ours])
    assert differences.max().item() < 1e-4
    assert (differences > 1e-5).sum().item() <= 1e-3 * differences.numel()


def test_initial_weights_are_the_solo_runs():
    members = [_member(seed, seed) for seed in (3, 11)]
    models, _ = _initial_models(members, slate_size=10, device=CPU)
    for member, model in zip(members, models):
        with seeded(member.seed):
            solo = build_gems(member.config)
        assert _max_difference(model.state_dict(), solo.state_dict()) == 0.0
    assert _max_difference(models[0].state_dict(), models[1].state_dict()) > 0.1  # the seeds differ


def test_first_batch_losses_and_gradients_match_the_solo_model():
    """One batch through the stack and through each member's own GeMS (the independent objective of
    `gems_oracle`, autograd's CE) with the same noise: losses and gradients agree to float rounding."""
    members = [_member(seed, seed) for seed in (1, 2, 3)]
    models, noise = _initial_models(members, slate_size=10, device=CPU)
    solo_noise = [g.clone_state() for g in noise]
    config = members[0].config
    with torch.enable_grad():
        stack = GeMSStack(models, CPU)
        rows = torch.stack([torch.arange(64) * 7 for _ in members])
        slates = torch.stack([m.slates.flatten(0, 1)[r] for m, r in zip(members, rows)])
        clicks = torch.stack([m.clicks.flatten(0, 1)[r] for m, r in zip(members, rows)]).float()
        losses = stack.terms(slates, clicks, config.lambda_click, config.lambda_KL,
                             member_noise(noise, (64, config.latent_dim), CPU))["total"]
        losses.sum().backward()
    for k, (model, generator) in enumerate(zip(models, solo_noise)):
        eps = torch.randn(64, config.latent_dim, generator=generator)
        loss = reference_terms(model, slates[k], clicks[k], config.lambda_click, config.lambda_KL, eps)["total"]
        loss.backward()
        assert abs(losses[k].item() - loss.item()) < 1e-5
        # member k's gradients, shaped as its solo GeMS parameters (the stack holds Linear weights transposed)
        gradients = {name: t.grad[k].T if name in stack.transposed else t.grad[k] for name, t in stack.tensors.items()}
        for name, parameter in model.named_parameters():
            assert torch.allclose(gradients[name], parameter.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("batches", [1, 3])
def test_weights_after_the_first_batches_match_train_gems(batches):
    """No validation part and one epoch of `batches` batches: the returned weights are those after the
    last batch, for the stack and for the solo oracle (same noise, batch order and Adam)."""
    members = [_member(seed, 100 + seed, max_epochs=1, val_fraction=0.0, max_slates=256 * batches)
               for seed in (5, 6)]
    stacked = train_gems_population(members)
    for member, (model, metrics) in zip(members, stacked):
        solo, solo_metrics = train_gems(member.slates.long(), member.clicks.float(), member.config, member.seed)
        _assert_adam_steps_agree(model.state_dict(), solo.state_dict())
        assert metrics["train_loss"] == pytest.approx(solo_metrics["train_loss"], abs=1e-5)


def test_two_epochs_have_the_solo_validation_losses_and_best_epoch():
    """Per-epoch validation losses agree within 1e-5 relative: float rounding of batched kernels (float32
    sums of ~10⁴ terms, ~1e-6 relative, a little amplified over 6 Adam steps), 100× below what another
    seed changes (checked). The best epoch, the kept weights and every metric key agree."""
    members = [_member(seed, seed, max_epochs=2) for seed in (7, 8)]
    stacked = train_gems_population(members)
    for member, (model, metrics) in zip(members, stacked):
        solo, solo_metrics = train_gems(member.slates.long(), member.clicks.float(), member.config, member.seed)
        assert metrics.keys() == solo_metrics.keys()
        assert metrics["best_epoch"] == solo_metrics["best_epoch"]
        assert metrics["epochs_run"] == 2 and metrics["cuda_graph"] is False and not model.training
        for ours, theirs in zip(metrics["history"], solo_metrics["history"]):
            assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert _max_difference(model.state_dict(), solo.state_dict()) < 1e-3
    other_seed = train_gems(members[0].slates.long(), members[0].clicks.float(), members[0].config, seed=99)[1]
    assert abs(other_seed["history"][-1]["val_loss"] - stacked[0][1]["history"][-1]["val_loss"]) > 1e-3


def test_members_are_independent():
    base = [_member(seed, seed, max_epochs=1) for seed in (1, 2)]
    first = train_stacked_gems([*base, _member(3, 3, max_epochs=1)])
    second = train_stacked_gems([*base, _member(42, 9, max_epochs=1)])  # member 2: other seed and data
    for k in (0, 1):
        assert _max_difference(first[k][0].state_dict(), second[k][0].state_dict()) == 0.0
        assert first[k][1]["history"] == second[k][1]["history"]
    assert _max_difference(first[2][0].state_dict(), second[2][0].state_dict()) > 1e-3


def test_members_with_different_sizes_train_in_their_own_stacks():
    members = [_member(1, 1, max_epochs=1), _member(2, 2, max_epochs=1, max_slates=300),
               _member(3, 3, max_epochs=1), _member(4, 4, max_epochs=1, max_slates=300)]
    assert stack_groups(members) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="equal settings"):
        train_stacked_gems(members[:2])
    stacked = train_gems_population(members)
    for member, (model, metrics) in zip(members, stacked):
        solo, solo_metrics = train_gems(member.slates.long(), member.clicks.float(), member.config, member.seed)
        assert metrics["n_train_slates"] == solo_metrics["n_train_slates"]
        assert metrics["val_loss"] == pytest.approx(solo_metrics["val_loss"], rel=1e-5)
        assert _max_difference(model.state_dict(), solo.state_dict()) < 1e-3


def test_host_reads_do_not_grow_with_the_number_of_batches(monkeypatch):
    reads = count_host_reads(monkeypatch)
    totals = []
    for batch_size in (128, 32):  # 4 and 15 training batches per epoch, the same validation slates
        reads.clear()
        batches: list[int] = []
        train_stacked_gems([_member(seed, seed, max_epochs=2, batch_size=batch_size) for seed in (1, 2)],
                           batch_callback=lambda epoch, done, total: batches.append(done))
        totals.append(sum(reads.values()))
        assert len(batches) == 2 * math.ceil(540 / batch_size)
    assert totals[0] > 0, "the counter saw no reads at all"
    assert totals[1] == totals[0], f"host reads grow with the number of batches: {dict(reads)}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the stack on the device vs solo CUDA runs")
def test_on_cuda_members_match_the_solo_cuda_runs():
    """On CUDA the member's noise comes from a CUDA generator seeded as the solo run's global one."""
    members = [_member(seed, seed, max_epochs=1, accelerator="cuda") for seed in (1, 2)]
    stacked = train_stacked_gems(members)
    for member, (model, metrics) in zip(members, stacked):
        solo, solo_metrics = train_gems(member.slates.long(), member.clicks.float(), member.config, member.seed,
                                        cuda_graph=False)
        assert metrics["val_loss"] == pytest.approx(solo_metrics["val_loss"], rel=1e-5)
        assert _max_difference(model.state_dict(), solo.state_dict()) < 1e-3


# -- registry: ensure_gems_population --------------------------------------------------------------------


@pytest.fixture
def envs_with_logged_data(sqlite_settings):
    logged_config = LoggedDataConfig(episodes=4)
    with open_registry(sqlite_settings) as registry:
        envs = [make_env(name) for name in ("focused_topdown", "diffuse_mix", "focused_divpen")]
        logged = [inputs.ensure_logged_data(registry, env, logged_config, say=lambda _: None) for env in envs]
    return sqlite_settings, envs, logged


def test_ensure_gems_population_trains_only_the_missing_and_registers_solo_form_artifacts(envs_with_logged_data,
                                                                                         monkeypatch):
    settings, envs, logged = envs_with_logged_data
    config = GeMSConfig(max_epochs=1, max_slates=300)
    stacked_sizes: list[int] = []
    original = inputs.train_stacked_gems

    def recording(members, **kwargs):
        stacked_sizes.append(len(members))
        return original(members, **kwargs)

    monkeypatch.setattr(inputs, "train_stacked_gems", recording)
    quiet = lambda _: None  # noqa: E731
    with open_registry(settings) as registry:
        solo = inputs.ensure_gems(registry, envs[0], logged[0], config, seed=4, say=quiet)
        requests = [inputs.GeMSRequest(env, log, config, 4) for env, log in zip(envs, logged)]
        requests.append(requests[1])  # asked twice: trained once
        artifacts = inputs.ensure_gems_population(registry, requests, say=quiet)
        assert stacked_sizes == [1, 2]  # the solo run (a stack of one), then the two missing
        assert artifacts[0].id == solo.id and artifacts[3].id == artifacts[1].id
        assert len(registry.list_artifacts(kind="gems")) == 3
        again = inputs.ensure_gems_population(registry, requests[:3], say=quiet)
        assert [a.id for a in again] == [a.id for a in artifacts[:3]] and stacked_sizes == [1, 2]
        for env, log, artifact in zip(envs, logged, artifacts):
            # the solo path (what `train` calls) finds the stacked member under its own key
            assert inputs.ensure_gems(registry, env, log, config, seed=4, say=quiet).id == artifact.id
            assert artifact.parents == [log.id] and artifact.kind == solo.kind and artifact.env == env.config.name
            # the file is complete and is what the row records (written file-then-row)
            assert hashlib.sha256(registry.artifact_path(artifact.id).read_bytes()).hexdigest() == artifact.sha256
            assert artifact.config.keys() == solo.config.keys() and artifact.metrics.keys() == solo.metrics.keys()
            state = registry.load_artifact_state(artifact.id)  # SHA-256 checked, weights_only
            assert state.keys() == registry.load_artifact_state(solo.id).keys()
            model, (center, scale) = inputs.load_gems(registry, artifact)
            assert center.shape == scale.shape == (config.latent_dim,) and bool((scale > 0).all())
            assert model.rank(center.unsqueeze(0)).shape == (1, 10)
        # the stacked member is the solo run of its request, to rounding
        data = inputs.load_logged_data(registry, logged[1])
        oracle, _ = train_gems(data.slates.long(), data.clicks.float(), config, 4)
        member, _ = inputs.load_gems(registry, artifacts[1])
        assert _max_difference(member.state_dict(), oracle.state_dict()) < 1e-3


# -- CLI ----------------------------------------------------------------------------------------------------


TINY = ["--device", "cpu", "--set", "logged.episodes=2", "--set", "max_epochs=1", "--set", "max_slates=200"]


def test_pretrain_gems_all_prints_one_artifact_per_env_and_reuses_them(tmp_path):
    runner = CliRunner()
    home = tmp_path / "home"
    first = runner.invoke(app, ["--home", str(home), "pretrain", "gems", "--env", "all", *TINY])
    assert first.exit_code == 0, first.output
    assert "one stack of 6" in first.output
    ids = [line for line in first.stdout.splitlines() if line.isdigit()]
    assert len(ids) == len(env_names()) == 6 and len(set(ids)) == 6
    for name in env_names():
        assert f"GeMS for {name} (cpu): artifact" in first.stdout
    second = runner.invoke(app, ["--home", str(home), "pretrain", "gems", "--env", "all", *TINY])
    assert second.exit_code == 0, second.output
    assert [line for line in second.stdout.splitlines() if line.isdigit()] == ids
    assert "pretraining GeMS" not in second.output
    single = runner.invoke(app, ["--home", str(home), "pretrain", "gems", "--env", env_names()[2], *TINY])
    assert single.exit_code == 0 and single.stdout.splitlines()[-1] == ids[2]


@pytest.mark.parametrize("env, overrides, fragment", [
    ("all", ["--set", "max_slates=1"], "max_slates"),
    ("focused_topdown,no_such_env", [], "no_such_env"),
    ("focused_topdown,focused_topdown", [], "distinct"),
    ("all", ["--set", "logged.episodes=1"], "logged.episodes"),
])
def test_pretrain_gems_all_refuses_bad_input_before_any_work(tmp_path, env, overrides, fragment):
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["--home", str(home), "pretrain", "gems", "--env", env, *overrides])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not (home / "artifacts").exists()


# -- population training: members' missing GeMS as one stack (`ensure_population_gems`) ----------------------


def test_population_members_missing_gems_are_pretrained_as_one_stack_and_used_by_the_members(tmp_path, monkeypatch):
    from slatectl.settings import Settings
    from slatectl.train.assembly import ensure_population_gems
    from slatectl.train.config import resolve_run_config
    from slatectl.train.loop import Trainer
    from slatectl.train.population import population_configs

    overrides = ["logged.episodes=4", "gems.max_epochs=1", "gems.max_slates=300", "training.random_steps=2"]
    base = [resolve_run_config("sac-gems", env, overrides=overrides, cli_training={"max_steps": 4, "device": "cpu"})
            for env in ("focused_topdown", "diffuse_divpen")]
    configs = population_configs(base, [21, 22])  # 4 members: 2 envs × 2 seeds, each its own GeMS
    stacked_sizes: list[int] = []
    original = inputs.train_stacked_gems
    monkeypatch.setattr(inputs, "train_stacked_gems",
                        lambda members, **kw: stacked_sizes.append(len(members)) or original(members, **kw))
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        trainer = Trainer(registry, configs)
        members = trainer.build_members()  # the four missing GeMS: one stack, nothing pretrained alone
        assert stacked_sizes == [4]  # (a GeMS pretrained alone would be a stack of 1)
        gems = registry.list_artifacts(kind="gems")
        assert sorted((a.env, a.config["seed"]) for a in gems) == [
            ("diffuse_divpen", 21), ("diffuse_divpen", 22), ("focused_topdown", 21), ("focused_topdown", 22)]
        for member in members:  # each member was built from its own (env, seed) GeMS
            assert any(a.id in member.inputs.artifact_ids and a.env == member.config.env and
                       a.config["seed"] == member.config.training.seed for a in gems)
        ensure_population_gems(registry, trainer.configs, say=lambda _: None)
        assert stacked_sizes == [4]  # all found
