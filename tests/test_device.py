"""One code path on every device: the simulator, its counter-based draws, the fixed policies, logged data and
collection give on device D what they give on the CPU.

CI has no GPU: the `cuda` cases skip there, and the CPU cases check the device-agnostic code itself —
the GPU-side choices forced on the CPU (masked drift, staged recording), batch partitions, and a
run under `torch.device("meta")` as the default device, where any tensor made without an explicit
`device=` lands on the meta device and the next operation mixing it with the simulator's tensors fails.
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from slatectl.agents.pretrained import AgentInputs
from slatectl.cli import app
from slatectl.collect import recorder
from slatectl.collect.collector import stacked_form
from slatectl.collect.recorder import record_dataset
from slatectl.device import resolve_device
from slatectl.errors import BadInput
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.logged import LoggedDataConfig, generate_logged_data
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rng import CounterRNG
from slatectl.sim.rollout import run_episodes
from slatectl.train.assembly import build_agent
from slatectl.train.config import resolve_run_config

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")),
]
ENVS = ["focused_topdown", "diffuse_mix"]


def _trajectory(env_name: str, policy_name: str, users: torch.Tensor, seed: int, device: str, dense_drift: bool = False):
    """(slates, clicks, rewards, user states) of whole episodes, on the CPU for comparison."""
    env = make_env(env_name, device=device)
    if dense_drift:
        env.sparse_drift = False
    policy = POLICIES[policy_name]()
    users = users.to(device)
    first = env.reset(users, seed)
    policy.reset(users, seed)
    slates, clicks, rewards, states = [first.slate], [first.clicks], [], [env.user.clone()]
    for _ in range(env.config.episode_length):
        result = env.step(policy.act(env), oracle=policy.uses_oracle)
        slates.append(result.observation.slate)
        clicks.append(result.observation.clicks)
        rewards.append(result.reward)
        states.append(result.user_state)
    return tuple(torch.stack(x, dim=1).cpu() for x in (slates, clicks, rewards, states))


def _assert_same_trajectory(got, want):
    slates, clicks, rewards, states = got
    assert torch.equal(slates, want[0]) and torch.equal(clicks, want[1]) and torch.equal(rewards, want[2])
    torch.testing.assert_close(states, want[3], rtol=1e-5, atol=1e-6)


# -- the counter-based draws ------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_counter_rng_gives_the_cpu_integers_and_floats_on_every_device(device):
    users = torch.tensor([0, 1, 7, 123_456, 2**33 + 5])
    cpu, other = CounterRNG(2754851, 3, users), CounterRNG(2754851, 3, users.to(device))
    assert other.key.device.type == device
    assert torch.equal(other.bits(640, 64).cpu(), cpu.bits(640, 64))
    assert torch.equal(other.uniform(0, 33).cpu(), cpu.uniform(0, 33))
    assert torch.equal(other.integers(5, 10, 1000).cpu(), cpu.integers(5, 10, 1000))
    assert torch.equal(other.distinct_items(64, 1000, 10).cpu(), cpu.distinct_items(64, 1000, 10))
    torch.testing.assert_close(other.normal(0, 20).cpu(), cpu.normal(0, 20), rtol=0, atol=1e-6)


# -- the simulator and the fixed policies -----------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy_name", sorted(POLICIES))
@pytest.mark.parametrize("env_name", ENVS)
def test_a_users_trajectory_on_the_device_equals_its_cpu_trajectory(env_name, policy_name, device):
    users = torch.tensor([3, 0, 41, 9, 1000, 77, 5, 12])
    want = _trajectory(env_name, policy_name, users, seed=11, device="cpu")
    got = _trajectory(env_name, policy_name, users, seed=11, device=device)
    if not POLICIES[policy_name].uses_oracle or device == "cpu":
        _assert_same_trajectory(got, want)
        return
    # The oracle's top-10 ranks float scores: on a GPU two items whose scores differ by less than the
    # backends' rounding may swap, and that user's episode then goes its own way. All but one user
    # must match exactly.
    same = [all(torch.equal(g[i], w[i]) for g, w in zip(got[:3], want[:3])) for i in range(len(users))]
    assert sum(same) >= len(users) - 1
    keep = torch.tensor(same)
    _assert_same_trajectory(tuple(g[keep] for g in got), tuple(w[keep] for w in want))


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_masked_drift_used_off_the_cpu_gives_the_cpu_numbers(policy_name):
    users = torch.arange(60)
    want = _trajectory("diffuse_mix", policy_name, users, seed=2, device="cpu")
    got = _trajectory("diffuse_mix", policy_name, users, seed=2, device="cpu", dense_drift=True)
    assert torch.equal(got[3], want[3])  # the same user embeddings, bit for bit
    _assert_same_trajectory(got, want)


def test_step_oracle_hint_fills_oracle_positions_only_when_told_or_found():
    env = make_env("focused_topdown")
    env.reset(torch.arange(4), seed=0)
    state = (env.user.clone(), env.bored.clone())
    filled = env.step(torch.full((4, 10), -1), oracle=None).observation.slate  # the CPU looks
    assert (filled >= 0).all()
    env.reset(torch.arange(4), seed=0)
    assert torch.equal(env.user, state[0])
    assert torch.equal(env.step(torch.full((4, 10), -1), oracle=True).observation.slate, filled)


@pytest.mark.parametrize("device", DEVICES)
def test_returns_and_logged_data_on_the_device_equal_the_cpu_ones(device):
    users = torch.arange(40)
    for name in ("random", "eps-oracle"):
        cpu_returns = run_episodes(make_env("focused_divpen"), POLICIES[name](), users, seed=4)
        returns = run_episodes(make_env("focused_divpen", device=device), POLICIES[name](), users, seed=4)
        assert returns.device.type == device and torch.equal(returns.cpu(), cpu_returns)
    config = LoggedDataConfig(episodes=30, seed=8)
    want = generate_logged_data(make_env("diffuse_topdown"), config, batch_size=30)
    got = generate_logged_data(make_env("diffuse_topdown", device=device), config, batch_size=7)
    assert torch.equal(got.slates, want.slates) and torch.equal(got.clicks, want.clicks)


# -- collection --------------------------------------------------------------------------------------------
def _agent(name: str, device: str):
    config = resolve_run_config(name, "focused_topdown")
    torch.manual_seed(0)
    inputs = AgentInputs(gems=GeMS(num_items=1000, slate_size=10, item_dim=20, latent_dim=32),
                         gems_bounds=(torch.full((32,), 0.1), torch.full((32,), 2.0)), mf=torch.randn(1000, 20))
    torch.manual_seed(1)
    env, agent = build_agent(config, inputs)
    return env.to(device), stacked_form(name, agent, device)  # as collection drives it


def _assert_same_arrays(got: dict, want: dict, exact_floats: bool = True):
    """The same episodes: every array equal, except that the collecting agent's own float records
    (`agent/*`) may differ in the last bits between batch sizes (the matrix kernels depend on the batch's
    size on some CPUs: 1e-6 seen on an Intel Xeon); `exact_floats=False` allows that for every float."""
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        agent_float = name.startswith("agent/") and np.issubdtype(want[name].dtype, np.floating)
        if (exact_floats and not agent_float) or not np.issubdtype(want[name].dtype, np.floating):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("agent_name", ["random", "sac-gems"])
def test_collected_arrays_do_not_depend_on_batches_or_on_staged_copies(agent_name):
    # Batches of 5 and 4 users: a batch of ONE user takes other matrix-vector kernels in the agent's
    # networks on a CPU (float rounding of the beliefs differs in the last bits), as it always has.
    env, agent = _agent(agent_name, "cpu")
    want = record_dataset(env, agent, episodes=9, seed=3, batch_size=9)
    _assert_same_arrays(record_dataset(env, agent, episodes=9, seed=3, batch_size=5), want)
    seen = []
    staged = record_dataset(env, agent, episodes=9, seed=3, batch_size=5, staged=True,
                            on_batch=lambda done, mean: seen.append(done))
    _assert_same_arrays(staged, want)
    assert seen == [5, 9]
    assert want["rewards"].shape == (900,) and want["observations/slate"].dtype == np.int16
    np.testing.assert_array_equal(want["observations/slate"].reshape(9, 100, 10)[:, 1:],
                                  want["actions/slate"].reshape(9, 100, 10)[:, :-1])


@pytest.mark.parametrize("agent_name", ["random", "sac-gems"])
def test_parallel_workers_record_the_same_arrays_and_restore_the_thread_count(agent_name, monkeypatch):
    env, agent = _agent(agent_name, "cpu")
    want = record_dataset(env, agent, episodes=13, seed=3, batch_size=4, workers=1)
    threads = torch.get_num_threads()
    seen, names = [], set()

    def on_batch(done, mean):
        seen.append(done)
        names.add(threading.current_thread().name)

    got = record_dataset(env, agent, episodes=13, seed=3, batch_size=4, workers=3, on_batch=on_batch)
    _assert_same_arrays(got, want)
    # one report per batch, the episodes recorded so far (batches land in any order across workers)
    assert len(seen) == 4 and seen == sorted(seen) and seen[-1] == 13
    assert all(n.startswith("recorder") for n in names)
    assert torch.get_num_threads() == threads
    # By default: one worker per torch thread on the CPU for batches of MIN_PARALLEL_BATCH users or more,
    # one loop in the calling thread for smaller ones.
    torch.set_num_threads(2)
    try:
        for smallest, in_workers in ((5, False), (4, True)):
            monkeypatch.setattr(recorder, "MIN_PARALLEL_BATCH", smallest)
            names.clear()
            _assert_same_arrays(record_dataset(env, agent, episodes=13, seed=3, batch_size=4, on_batch=on_batch), want)
            assert names and all(n.startswith("recorder_") == in_workers for n in names)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("agent_name", ["sac-gems", "slateq", "reinforce-softmax"])
def test_the_stochastic_policy_records_the_same_arrays_whatever_the_workers_or_copies(agent_name, monkeypatch):
    # Each batch draws from its own generator (seeded from the seed and its first user), never from torch's
    # global RNG: any worker may record it, and the caller's global RNG is left alone.
    env, agent = _agent(agent_name, "cpu")
    explore = dict(episodes=10, batch_size=4, mode="explore")
    global_rng = torch.get_rng_state()
    want = record_dataset(env, agent, seed=3, workers=1, **explore)
    assert torch.equal(torch.get_rng_state(), global_rng)
    torch.manual_seed(12345)  # a different global RNG state changes nothing
    _assert_same_arrays(record_dataset(env, agent, seed=3, workers=3, **explore), want)
    _assert_same_arrays(record_dataset(env, agent, seed=3, staged=True, **explore), want)
    names = set()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # by default in worker threads too, as the greedy policy
        monkeypatch.setattr(recorder, "MIN_PARALLEL_BATCH", 4)
        on_batch = lambda done, mean: names.add(threading.current_thread().name)  # noqa: E731
        _assert_same_arrays(record_dataset(env, agent, seed=3, on_batch=on_batch, **explore), want)
        assert names and all(n.startswith("recorder_") for n in names)
    finally:
        torch.set_num_threads(threads)
    # and it is a stochastic policy: another seed, or the greedy policy, records other slates
    other_seed = record_dataset(env, agent, seed=4, workers=1, **explore)
    greedy = record_dataset(env, agent, seed=3, workers=1, **{**explore, "mode": "greedy"})
    assert not np.array_equal(other_seed["actions/slate"], want["actions/slate"])
    assert not np.array_equal(greedy["actions/slate"], want["actions/slate"])
    # the same users (the simulator's draws are per user): the first observation does not depend on the policy
    np.testing.assert_array_equal(greedy["observations/slate"].reshape(10, 100, -1)[:, 0],
                                  want["observations/slate"].reshape(10, 100, -1)[:, 0])


def test_a_failing_worker_stops_the_recording_with_its_error(monkeypatch):
    env, agent = _agent("random", "cpu")
    recorded = []
    play = recorder._record_batch

    def failing(env, agent, seed, out, first, size, mode):
        if first == 0:  # worker 0's first batch
            raise RuntimeError("batch 0 failed")
        recorded.append(first)
        play(env, agent, seed, out, first, size, mode)

    monkeypatch.setattr(recorder, "_record_batch", failing)
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="batch 0 failed"):
        record_dataset(env, agent, episodes=40, seed=3, batch_size=2, workers=2)
    assert torch.get_num_threads() == threads
    assert len(recorded) < 10  # worker 1 stopped instead of playing all its 10 batches


def test_ctrl_c_while_workers_record_stops_them_at_their_next_batch(monkeypatch):
    env, agent = _agent("random", "cpu")
    recorded = []
    play = recorder._record_batch

    def slow_play(env, agent, seed, out, first, size, mode):
        recorded.append(first)
        play(env, agent, seed, out, first, size, mode)

    def interrupted(self, timeout=None):  # the main thread waiting for a worker receives Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(recorder, "_record_batch", slow_play)
    monkeypatch.setattr(concurrent.futures.Future, "result", interrupted)
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        record_dataset(env, agent, episodes=400, seed=3, batch_size=2, workers=2)
    assert torch.get_num_threads() == threads
    assert len(recorded) < 50  # of 200 batches: both workers stopped soon after the interrupt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("agent_name", ["random", "sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn", "slateq",
                                        "reinforce-softmax"])
def test_collection_on_the_device_matches_the_cpu(agent_name, device, monkeypatch):
    if device == "cuda":
        # Full float32 on the GPU: cuDNN may run the belief GRU in TF32 (torch.backends.cudnn.allow_tf32 is
        # on by default), whose ~1e-3 errors would flip the networks' argmaxes far more often than float32
        # rounding does. This test is about the device-agnostic code, not the precision mode.
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    want = record_dataset(*_agent(agent_name, "cpu"), episodes=6, seed=1, batch_size=4)
    got = record_dataset(*_agent(agent_name, device), episodes=6, seed=1, batch_size=4)
    if agent_name == "random" or device == "cpu":  # slates from the counter streams: identical everywhere
        # Integers exactly; off the CPU the user states only within rounding (another reduction order in the
        # drift's normalisation, and the reset's float64 log/cos/sin may differ by an ulp, as in the
        # trajectory test above): bit-equal floats would fail on a GPU.
        _assert_same_arrays(got, want, exact_floats=device == "cpu")
        return
    # A network's argmax over 1,000 items can flip on a GPU where two scores differ by less than the
    # backends' rounding, and that user's episode then goes its own way: the first step's slates agree
    # for all users but at most one, and every array has the CPU's dtype and shape.
    assert {n: (a.dtype, a.shape) for n, a in got.items()} == {n: (a.dtype, a.shape) for n, a in want.items()}
    first = lambda arrays: arrays["actions/slate"].reshape(6, 100, -1)[:, 0]  # noqa: E731
    assert (first(got) == first(want)).all(axis=1).sum() >= 5


# -- forgotten device arguments ----------------------------------------------------------------------------
def test_no_tensor_is_made_without_an_explicit_device():
    """Under a meta default device every tensor made without `device=` is a meta tensor, and mixing it
    with the simulator's CPU tensors raises: the simulator, the policies, rollouts, logged data and
    collection must name their device everywhere. (Remove one `device=` in slatectl/sim to see it fail.)"""
    env, agent = _agent("sac-gems", "cpu")
    random_env, random_agent = _agent("random", "cpu")
    with torch.device("meta"):
        assert torch.empty(1).device.type == "meta"  # the trick is active
        for name in POLICIES:
            returns = run_episodes(env, POLICIES[name](), torch.arange(5, device="cpu"), seed=1)
            assert returns.device.type == "cpu"
        logged = generate_logged_data(env, LoggedDataConfig(episodes=3, seed=2), batch_size=2)
        assert logged.slates.device.type == "cpu"
        for e, a in ((env, agent), (random_env, random_agent)):
            arrays = record_dataset(e, a, episodes=3, seed=0, batch_size=2, staged=True)
            assert arrays["rewards"].shape == (300,)


def test_the_meta_trick_does_catch_a_tensor_made_without_a_device():
    env = make_env("focused_topdown")
    env.reset(torch.arange(3), seed=0)
    with torch.device("meta"), pytest.raises((RuntimeError, NotImplementedError)):
        forgotten = torch.arange(env.config.slate_size)  # what a missing `device=` makes
        (env.user[:, : env.config.slate_size] * forgotten).sum().item()


# -- choosing the device -----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_bad_input_before_any_work():
    with pytest.raises(BadInput, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
    runner = CliRunner()
    for args in (["env", "rollout", "focused_topdown", "--policy", "random", "--device", "cuda"],
                 ["collect", "--quality", "random", "--env", "focused_topdown", "--device", "cuda"],
                 ["data", "logged", "--env", "focused_topdown", "--device", "cuda"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no CUDA GPU" in result.output


def test_the_commands_say_which_device_they_use():
    result = CliRunner().invoke(app, ["env", "rollout", "focused_topdown", "--policy", "random", "--episodes", "3",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "simulating on cpu" in result.output


def test_moving_a_simulator_keeps_it_when_already_there_and_mixed_envs_move_whole():
    from slatectl.sim.mixed import MixedTopicRec

    env = make_env("focused_topdown")
    assert env.to("cpu") is env
    mixed = MixedTopicRec([make_env("focused_topdown"), make_env("diffuse_mix")])
    assert mixed.to("cpu") is mixed
    if torch.cuda.is_available():
        moved = mixed.to("cuda")
        assert isinstance(moved, MixedTopicRec) and moved.item_embeddings.device.type == "cuda"
