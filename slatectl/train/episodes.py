"""Play whole episodes of an agent in the simulator, batched over users (training, validation, test,
collection). Over a stacked agent's K members (K = 1 for a solo run or a dataset): `begin_member_episodes`
and `member_step`, the two moves of every such loop (observations go to the agent's device, slates to the
simulator's; with both on one device nothing is copied and no env step waits for the host; agents never
put oracle positions in a slate, and saying so spares the simulator a per-step check);
`play_member_episodes`, the trainer's loop; `member_episodes` / `stack_batches` between a member's
episodes and the stacked layout. `play_episodes` / `record_episodes` drive an unstacked agent (its own
tests use them)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.agents.base import ActMode, Agent, EpisodeBatch
from slatectl.agents.stacked import StackedAgent
from slatectl.sim.member_envs import MemberEnvs, MemberStep
from slatectl.sim.topicrec import Observation, TopicRec


@dataclass
class RecordedEpisodes:
    """Episodes plus what the agent and the simulator knew at each step (for datasets)."""

    episodes: EpisodeBatch
    beliefs: torch.Tensor  # (B, H, S) the belief each action was taken on
    bored: torch.Tensor  # (B, H, T) bool: the user's bored topics during each step


@torch.no_grad()
def play_episodes(env: TopicRec, agent: Agent, user_ids: torch.Tensor, seed: int, mode: ActMode,
                  device: torch.device | str = "cpu") -> EpisodeBatch:
    """Run B = len(user_ids) users for one episode each with the agent acting in `mode`.

    Returns the episodes in the layout of `EpisodeBatch`, on the simulator's device (its item table's).
    Observations go to the agent's `device` for acting, slates to the simulator's; with both on one
    device nothing is copied and no step waits for the host (the values are read by the caller).
    """
    return _play(env, agent, user_ids, seed, mode, device, record=False).episodes


@torch.no_grad()
def record_episodes(env: TopicRec, agent: Agent, user_ids: torch.Tensor, seed: int, mode: ActMode,
                    device: torch.device | str = "cpu") -> RecordedEpisodes:
    """`play_episodes`, also returning the agent's beliefs and the users' boredom at every step."""
    return _play(env, agent, user_ids, seed, mode, device, record=True)


def _play(env: TopicRec, agent: Agent, user_ids: torch.Tensor, seed: int, mode: ActMode,
          device: torch.device | str, record: bool) -> RecordedEpisodes:
    cfg = env.config
    B, H, K = user_ids.shape[0], cfg.episode_length, cfg.slate_size
    on = {"device": simulator_device(env)}  # the episode buffers live with the simulator
    slates = torch.empty(B, H + 1, K, dtype=torch.int64, **on)
    clicks = torch.empty(B, H + 1, K, dtype=torch.float32, **on)
    actions = torch.zeros(B, H, agent.action_dim, dtype=torch.float32, **on)
    rec_slates = torch.empty(B, H, K, dtype=torch.int64, **on)
    rewards = torch.empty(B, H, dtype=torch.float32, **on)
    user_states = torch.empty(B, H + 1, cfg.embedding_dim, dtype=torch.float32, **on)
    beliefs: torch.Tensor | None = None
    bored = torch.empty(B, H, cfg.num_topics, dtype=torch.bool, **on) if record else None

    first = env.reset(user_ids, seed)
    slates[:, 0], clicks[:, 0], user_states[:, 0] = first.slate, first.clicks, env.user
    agent.begin_episodes(_to(first, device), user_ids, seed)
    for t in range(H):
        if record:
            belief = agent.belief_state()
            if beliefs is None:
                beliefs = torch.empty(B, H, belief.shape[1], **on)
            beliefs[:, t] = belief
        slate, action = agent.act(env, mode)
        # Agents never put oracle positions in a slate; saying so spares the simulator a per-step check.
        result = env.step(slate.to(on["device"]), oracle=False)
        agent.observe(_to(result.observation, device))
        obs = result.observation
        slates[:, t + 1], clicks[:, t + 1] = obs.slate, obs.clicks
        rec_slates[:, t] = obs.slate
        if agent.action_dim:
            actions[:, t] = action
        rewards[:, t] = result.reward
        user_states[:, t + 1] = result.user_state
        if bored is not None:
            bored[:, t] = result.bored
    episodes = EpisodeBatch(slates, clicks, actions, rec_slates, rewards, user_states)
    return RecordedEpisodes(episodes, beliefs if beliefs is not None else torch.empty(B, H, 0, **on),
                            bored if bored is not None else torch.empty(B, H, 0, dtype=torch.bool, **on))


def simulator_on(env: TopicRec, device: torch.device) -> TopicRec:
    """A simulator on `device`: a plain TopicRec is rebuilt around a moved copy of its item table (same
    config, same table, same counter-based draws: the same users)."""
    if simulator_device(env).type == device.type or type(env) is not TopicRec:
        return env
    return TopicRec(env.config, env.item_embeddings.to(device))


def simulator_device(env: TopicRec) -> torch.device:
    """Where the simulator runs: the device of its item table."""
    return env.item_embeddings.device


def _to(observation: Observation, device) -> Observation:
    if observation.slate.device == torch.device(device):
        return observation
    return type(observation)(slate=observation.slate.to(device), clicks=observation.clicks.to(device))


@torch.no_grad()
def begin_member_episodes(envs: MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor,
                          seeds: list[int]) -> Observation:
    """Member k's users `user_ids` of its env with seed `seeds[k]`: reset them and start the agent's
    beliefs on the first observation, which is returned ((K, B, slate), on the simulator's device)."""
    first = envs.reset(user_ids, seeds)
    agent.begin_episodes(first.slate.to(agent.device), first.clicks.to(agent.device))
    return first


@torch.no_grad()
def member_step(envs: MemberEnvs, agent: StackedAgent, mode: ActMode,
                generators: list[torch.Generator]) -> tuple[torch.Tensor, MemberStep]:
    """One step of every member's users: the agent acts in `mode` (member k drawing from `generators[k]`),
    the envs step, the agent observes. Returns the raw actions (K, B, A) and the step's result."""
    slate, action = agent.act(mode, generators, envs)
    result = envs.step(slate.to(envs.device), oracle=False)
    observation = result.observation
    agent.observe(observation.slate.to(agent.device), observation.clicks.to(agent.device))
    return action, result


@torch.no_grad()
def play_member_episodes(envs: MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor, seeds: list[int],
                         mode: ActMode, generators: list[torch.Generator]) -> EpisodeBatch:
    """The trainer's episodes: member k plays users `user_ids` of its env with seed `seeds[k]`, through
    `begin_member_episodes` and `member_step` (the moves collection's recorder makes too).

    Returns an `EpisodeBatch` whose fields have a leading member dimension (K, B, …), on the simulator's
    device (`envs.device`)."""
    cfg = envs.config
    K, B, H, S = envs.members, user_ids.shape[0], cfg.episode_length, cfg.slate_size
    on = {"device": envs.device}  # the episode buffers live with the simulator
    slates = torch.empty(K, B, H + 1, S, dtype=torch.int64, **on)
    clicks = torch.empty(K, B, H + 1, S, dtype=torch.float32, **on)
    actions = torch.zeros(K, B, H, agent.action_dim, dtype=torch.float32, **on)
    rewards = torch.empty(K, B, H, dtype=torch.float32, **on)
    user_states = torch.empty(K, B, H + 1, cfg.embedding_dim, dtype=torch.float32, **on)
    first = begin_member_episodes(envs, agent, user_ids, seeds)
    slates[:, :, 0], clicks[:, :, 0], user_states[:, :, 0] = first.slate, first.clicks, envs.user_states()
    for t in range(H):
        action, result = member_step(envs, agent, mode, generators)
        slates[:, :, t + 1], clicks[:, :, t + 1] = result.observation.slate, result.observation.clicks
        if agent.action_dim:
            actions[:, :, t] = action
        rewards[:, :, t] = result.reward
        user_states[:, :, t + 1] = result.user_state
    return EpisodeBatch(slates, clicks, actions, slates[:, :, 1:], rewards, user_states)


def member_episodes(batch: EpisodeBatch, k: int, rows: slice | None = None) -> EpisodeBatch:
    """Member k's episodes (rows `rows`, default all) of a population batch, as a solo batch."""
    rows = rows if rows is not None else slice(None)
    return EpisodeBatch(*(getattr(batch, f)[k, rows] for f in batch.__dataclass_fields__))


def stack_batches(batches: list[EpisodeBatch]) -> EpisodeBatch:
    return EpisodeBatch(*(torch.stack([getattr(b, f) for b in batches]) for f in EpisodeBatch.__dataclass_fields__))
