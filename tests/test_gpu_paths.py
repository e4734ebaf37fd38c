"""The device paths of GeMS pretraining and training, checked on the CPU through the same code.

CI has no GPU: the device-agnostic loops run here on the CPU, and what makes them fast on a GPU is
checked by its CPU-visible consequence (how often slatectl code reads a tensor back to the host: every
read waits for a GPU). Tests marked `cuda` need a GPU and skip without one; bench/gpu_check.sh runs them
on a GPU together with the simulator's CUDA-vs-CPU equality tests (tests/test_device.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from gems_oracle import reference_terms
from host_reads import count_host_reads, count_tensors_from_host_data
from slatectl.agents import AGENTS, AgentInputs
from slatectl.cli import app
from slatectl.config_tools import build_config
from slatectl.harness import seeded
from slatectl.pretrain.gems_train import GeMSConfig, build_gems, train_gems
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.config import default_config_dict, resolve_run_config
from slatectl.train.episodes import stack_batches
from slatectl.train.loop import Trainer, recorded_config
from slatectl.train.replay import EpisodeReplay
from stacked_play import generators, play_one, stacked
from synthetic_logged import prototype_slates

CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run by bench/gpu_check.sh on one)")
no_cuda = pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without a CUDA GPU")
TINY_TRAINING = ["training.random_steps=10", "training.val_every=1000", "training.val_episodes=4",
                 "training.test_episodes=4", "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50"]


def _hot_path(counts) -> int:
    """Reads made by the training loop and the agents (the simulator's own CPU-only reads excluded)."""
    return sum(n for (_, module), n in counts.items() if module.startswith(("slatectl.agents", "slatectl.train")))


# -- GeMS ------------------------------------------------------------------------------------------------


def test_gems_loop_equals_a_plain_loop_of_the_reference_schedule() -> None:
    # The device-ready loop (device-resident data, slices of a moved permutation, loss summed on the
    # device, the objective over the member dimension) must be the reference schedule: the same batches
    # in the same order from the CPU generator, one Adam step each, on the same sampling noise, here
    # against a plain loop over the solo model and the independent objective of `gems_oracle`. The two
    # round differently (batched matmuls and a hand-written cross-entropy against nn.Linear and
    # F.cross_entropy): Adam normalises gradient rounding into steps of up to lr = 1e-3 where a gradient is
    # near zero, so every weight within lr and at most 1 % of each tensor beyond 1e-4 (measured: at one
    # thread none, at two threads up to 0.2 %, none beyond 6.7e-4), losses within 1e-5; a wrong noise draw
    # or batch order moves most weights by ~lr and the losses by more than 1e-3.
    slates, clicks, _ = prototype_slates(episodes=8, steps=100, seed=9)
    config = GeMSConfig(max_epochs=2, val_fraction=0.0, batch_size=96)
    model, metrics = train_gems(slates, clicks, config, seed=11)

    rows_slates, rows_clicks = slates.reshape(-1, 10).long(), clicks.reshape(-1, 10).float()
    with seeded(11), torch.enable_grad():
        plain = build_gems(config)
        optimizer = torch.optim.Adam(plain.parameters(), lr=config.lr)
        order = torch.Generator().manual_seed(11)
        losses = []
        for _ in range(config.max_epochs):
            total = 0.0
            for index in torch.randperm(rows_slates.shape[0], generator=order).split(config.batch_size):
                eps = torch.randn(index.shape[0], config.latent_dim)  # the global generator, after the init
                loss = reference_terms(plain, rows_slates[index], rows_clicks[index], config.lambda_click,
                                       config.lambda_KL, eps)["total"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * index.shape[0]
            losses.append(total / rows_slates.shape[0])
    for (name, ours), theirs in zip(model.state_dict().items(), plain.state_dict().values()):
        difference = (ours - theirs).abs()
        assert float(difference.max()) < config.lr, name
        assert float((difference > 1e-4).float().mean()) <= 0.01, name
    assert [row["train_loss"] for row in metrics["history"]] == pytest.approx(losses, rel=1e-5)
    assert metrics["cuda_graph"] is False  # the switch is off on the CPU


@cuda
def test_gems_on_cuda_captured_step_matches_the_eager_step_and_the_cpu() -> None:
    slates, clicks, _ = prototype_slates(episodes=40, steps=100, seed=1)
    config = GeMSConfig(max_epochs=2, accelerator="cuda")
    _, captured = train_gems(slates, clicks, config, seed=3, cuda_graph=True)
    _, eager = train_gems(slates, clicks, config, seed=3, cuda_graph=False)
    _, on_cpu = train_gems(slates, clicks, GeMSConfig(max_epochs=2), seed=3)
    assert captured["cuda_graph"] is True and eager["cuda_graph"] is False and on_cpu["cuda_graph"] is False
    for key in ("train_loss", "val_loss"):
        # Same batches and noise on one device: only Adam's capturable arithmetic differs (rounding).
        assert [h[key] for h in captured["history"]] == pytest.approx([h[key] for h in eager["history"]], rel=1e-3)
        # CUDA draws its sampling noise from another generator: the same schedule, another sample path. On
        # the CPU, 24 other noise streams (same data, init and batches) moved the epoch losses by up to 4.5 %
        # (validation, epoch 2) and 2.8 % (training) from this seed's: 10 % leaves room for that spread,
        # and a wrong schedule (stale rows, a step replayed twice) moves them far more.
        assert [h[key] for h in captured["history"]] == pytest.approx([h[key] for h in on_cpu["history"]], rel=0.1)
    # Those noise streams gave validation slate accuracies of 0.52-0.60 after the 2 epochs.
    assert captured["val_slate_accuracy"] > 0.45


# -- solo training ---------------------------------------------------------------------------------------


def _agent(name: str, env, device: str = "cpu"):
    defaults = default_config_dict(name)["agent"]
    small = {} if name == "reinforce-softmax" else {"batch_size": 4, "capacity": 50}  # on-policy: 1 and 1
    params = build_config(AGENTS[name].params_cls, {**defaults, **small}, "agent.")
    inputs = AgentInputs()
    if name == "sac-gems":
        gems = build_gems(GeMSConfig()).eval().requires_grad_(False)
        inputs = AgentInputs(gems=gems, gems_bounds=(torch.zeros(32), torch.full((32,), 2.0)))
    elif name == "sac-topk-mf":
        inputs = AgentInputs(mf=torch.randn(env.config.num_items, 20))
    return stacked(name, AGENTS[name].build(params, env, inputs)).to(device)  # the form the trainer drives


@pytest.mark.parametrize("name", ["sac-gems", "sac-topk-ideal", "sac-wknn", "reinforce-softmax"])
def test_acting_reads_nothing_back_per_env_step(name, monkeypatch) -> None:
    torch.manual_seed(0)
    env = make_env("focused_topdown")
    agent = _agent(name, env)
    counts = count_host_reads(monkeypatch)
    episodes = play_one(env, agent, torch.arange(3), seed=1, mode="explore")
    assert _hot_path(counts) == 0, dict(counts)
    assert episodes.rewards.shape == (3, env.config.episode_length)


@pytest.mark.parametrize("name", sorted(name for name, spec in AGENTS.items() if spec.trainable))
def test_a_capturable_episode_makes_no_tensor_from_host_data(name, monkeypatch) -> None:
    # An episode that may be recorded into a CUDA graph one day (GeMS pretraining's step is): a
    # `torch.tensor(x, device=...)` there (the simulator's diversity penalty and reset draw had one each)
    # is a synchronous host-to-device copy that would fail the capture.
    torch.manual_seed(0)
    env = make_env("focused_divpen")  # a diversity penalty: the click model's crowded-slate branch runs
    agent, envs = _agent(name, env), MemberEnvs([env])
    made = count_tensors_from_host_data(monkeypatch)
    episodes = play_one(envs, agent, torch.arange(3), seed=1, mode="explore")
    assert not made, dict(made)
    assert episodes.rewards.shape == (3, env.config.episode_length)


def test_the_gems_training_step_makes_no_tensor_from_host_data(monkeypatch) -> None:
    from slatectl.pretrain.gems_stack import GeMSStack
    from slatectl.pretrain.gems_train import _Step

    slates, clicks, _ = prototype_slates(episodes=2, steps=10, seed=1)
    stack = GeMSStack([build_gems(GeMSConfig()), build_gems(GeMSConfig())], torch.device("cpu"))
    loss_sum = torch.zeros(2)
    train = (torch.stack([slates.reshape(-1, 10)] * 2), torch.stack([clicks.reshape(-1, 10)] * 2))
    step = _Step(stack, torch.optim.Adam(stack.parameters()), train, GeMSConfig(), [torch.Generator()] * 2, loss_sum)
    made = count_tensors_from_host_data(monkeypatch)
    step(torch.stack([torch.arange(8), torch.arange(8, 16)]))
    assert not made, dict(made)
    assert bool((loss_sum > 0).all())


@pytest.mark.parametrize("name", ["sac-gems", "reinforce-softmax"])
def test_an_update_reads_its_metrics_in_one_transfer(name, monkeypatch) -> None:
    torch.manual_seed(0)
    env = make_env("focused_topdown")
    agent = _agent(name, env)
    replay = EpisodeReplay(50, 1 if name == "reinforce-softmax" else 4)
    replay.add(play_one(env, agent, torch.arange(6), seed=1, mode="random"))
    batch = stack_batches([replay.sample()])
    counts = count_host_reads(monkeypatch)
    (metrics,) = agent.update(batch, generators(0))
    assert _hot_path(counts) == 1, dict(counts)
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_the_training_loop_reads_at_most_twice_per_learning_step(tmp_path, monkeypatch) -> None:
    # One read of the episode's return and one of the update's metrics per step; anything more per step
    # (a per-env-step or per-metric `.item()`) shows up as a difference between a short and a long run.
    reads = []
    for steps in (12, 20):
        config = resolve_run_config("sac-topk-ideal", "focused_topdown", overrides=TINY_TRAINING,
                                    cli_training={"max_steps": steps, "device": "cpu"})
        with open_registry(Settings.resolve(home=tmp_path / str(steps))) as registry:
            counts = count_host_reads(monkeypatch)
            Trainer(registry, config).run(command="test")[0]
            reads.append(sum(n for (_, module), n in counts.items()
                             if module in ("slatectl.train.loop", "slatectl.train.episodes") or module.startswith("slatectl.agents")))
            monkeypatch.undo()
    assert 0 < reads[1] - reads[0] <= 2 * (20 - 12), reads


def test_train_device_defaults_to_auto_and_a_run_records_the_device_it_resolved(tmp_path, monkeypatch) -> None:
    config = resolve_run_config("sac-gems", "focused_topdown")
    assert config.training.device == "auto" and config.gems.accelerator == "cpu"
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        on_cpu = Trainer(registry, config)
        # Without a GPU: exactly the config every earlier CPU run recorded.
        assert on_cpu.device == torch.device("cpu")
        recorded = recorded_config(on_cpu.configs[0], on_cpu.device)
        assert recorded["training"]["device"] == "cpu" and recorded["gems"]["accelerator"] == "cpu"

        said = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
        reporter = type("Reporter", (), {"message": lambda self, text: said.append(text)})()
        with_gpu = Trainer(registry, config, reporter)
        # With one, auto takes it, says so, and the GeMS the run pretrains for itself is trained there too.
        assert with_gpu.device == torch.device("cuda") and any("Fake GPU" in s for s in said)
        assert with_gpu.configs[0].training.device == "cuda" and with_gpu.configs[0].gems.accelerator == "cuda"


@cuda
def test_a_solo_run_trains_on_cuda_with_simulator_agent_and_replay_there(tmp_path) -> None:
    config = resolve_run_config("sac-topk-ideal", "focused_topdown", overrides=TINY_TRAINING,
                                cli_training={"max_steps": 14, "save_every": 14, "device": "cuda"})
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        result = Trainer(registry, config).run(command="test")[0]
        run = registry.get_run(result.run_id)
        state = registry.load_checkpoint_state(result.checkpoints[-1].id)
    assert run.status == "finished" and run.config["training"]["device"] == "cuda"
    assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))
    assert 0 <= result.tests[0].test_mean <= 100 * 10


# -- CLI -------------------------------------------------------------------------------------------------


@no_cuda
@pytest.mark.parametrize("command", ["gems", "mf"])
def test_pretrain_on_cuda_without_a_gpu_exits_2_before_any_work(command, tmp_path) -> None:
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "pretrain", command, "--env", "focused_topdown",
                                      "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "--device cuda" in result.output and "no CUDA GPU" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "home" / "artifacts").exists()


@no_cuda
def test_pretrain_gems_accelerator_override_to_cuda_without_a_gpu_exits_2(tmp_path) -> None:
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "pretrain", "gems", "--env", "focused_topdown",
                                      "--set", "accelerator=cuda"])
    assert result.exit_code == 2, result.output
    assert "no CUDA GPU" in result.output and not (tmp_path / "home" / "artifacts").exists()


class _TensorOffTheHost(torch.Tensor):
    """A CPU tensor that refuses `.numpy()` as a CUDA tensor does; `.cpu()` gives a plain tensor back."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")

    def cpu(self, *args, **kwargs):
        return torch.Tensor.cpu(self, *args, **kwargs).as_subclass(torch.Tensor)


def test_the_item_table_hash_of_a_simulator_off_the_host_is_the_cpu_one() -> None:
    # `data logged` and `pretrain gems|mf` build their simulator on --device (auto: CUDA on a GPU machine)
    # and hash its item table to identify the logged data: `.numpy()` of a CUDA table raised TypeError.
    from slatectl.train.inputs import env_table_sha256

    env = make_env("focused_topdown")
    on_cpu = env_table_sha256(env)
    env.item_embeddings = env.item_embeddings.as_subclass(_TensorOffTheHost)
    with pytest.raises(TypeError, match="cuda"):
        env.item_embeddings.numpy()  # the stand-in behaves as a CUDA table
    assert env_table_sha256(env) == on_cpu


def test_pretrain_gems_on_the_cpu_records_the_device_in_the_artifact(tmp_path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["--home", str(home), "pretrain", "gems", "--env", "focused_topdown", "--device", "cpu",
                                      "--set", "logged.episodes=20", "--set", "max_epochs=1"])
    assert result.exit_code == 0, result.output
    assert "(cpu)" in result.output
    with open_registry(Settings.resolve(home=home)) as registry:
        [gems] = registry.list_artifacts(kind="gems")
    assert gems.config["gems"]["accelerator"] == "cpu"


class _RecordingStep:
    """Stands in for a step recorded into a CUDA graph (the GeMS step, an episode): records the inputs of
    every *executed* call; a call made while capturing is recorded for the fake graph, not run."""

    def __init__(self) -> None:
        self.executed: list[list[int]] = []
        self.capturing = False
        self.recorded: torch.Tensor | None = None
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.noise: list[torch.Generator] = []  # the GeMS step's noise generators (none here)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def __call__(self, index: torch.Tensor) -> str:
        if self.capturing:
            self.recorded = index  # the graph's input buffer
            return "graph output"
        self.executed.append(index.tolist())
        return f"eager output {index.tolist()}"


class _FakeCuda:
    """The torch.cuda calls of the capturing classes, on the CPU: a graph's replay runs the recorded call
    on the current contents of its input buffer; capture can be made to fail."""

    def __init__(self, step: _RecordingStep, fail_capture: bool) -> None:
        self.step, self.fail_capture, self.captures = step, fail_capture, 0
        self.set_streams: list[object] = []  # torch.cuda.set_stream calls

    def install(self, monkeypatch) -> None:
        from contextlib import contextmanager

        fake = self

        class Graph:
            def replay(self) -> None:
                fake.step(fake.step.recorded)

        @contextmanager
        def graph(g):
            fake.captures += 1
            fake.step.capturing = True
            try:
                yield
                if fake.fail_capture:
                    raise RuntimeError("operation not permitted when stream is capturing")
            finally:
                fake.step.capturing = False

        stream = type("Stream", (), {"wait_stream": lambda self, other: None})
        self.main_stream = stream()
        monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: stream())
        monkeypatch.setattr(torch.cuda, "current_stream", lambda: self.main_stream)
        monkeypatch.setattr(torch.cuda, "set_stream", self.set_streams.append)
        monkeypatch.setattr(torch.cuda, "stream", contextmanager(lambda s: (yield)))
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)


def _warns_if(condition: bool):
    import contextlib
    import warnings

    if condition:
        return pytest.warns(UserWarning, match="capture .*failed")

    @contextlib.contextmanager
    def strict():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return strict()


@pytest.mark.parametrize("fail_capture", [False, True])
def test_the_captured_gems_step_runs_every_batch_once_in_order(fail_capture, monkeypatch) -> None:
    # The CUDA-graph control flow, checked on the CPU with fakes: warm-up steps run eagerly, the batch
    # whose step is recorded is run by the first replay (not twice, not skipped), later full batches
    # are replays, a short last batch is eager, and a failed capture falls back to eager steps.
    from slatectl.pretrain import gems_train

    recorder = _RecordingStep()
    fake = _FakeCuda(recorder, fail_capture)
    fake.install(monkeypatch)
    captured = gems_train._CapturedStep(recorder, batch_size=4, device=torch.device("cpu"))
    batches = [torch.arange(i, i + 4) for i in range(0, 40, 4)] + [torch.arange(40, 42)]
    with _warns_if(fail_capture):
        for epoch in range(2):
            for index in batches:
                captured(index)
    assert recorder.executed == [b.tolist() for b in batches] * 2
    assert fake.captures == 1 and captured.replaying is not fail_capture
    # A failed capture puts the caller's stream back (torch.cuda.graph leaves its own current then).
    assert fake.set_streams == ([fake.main_stream] if fail_capture else [])
