"""Play whole episodes of an agent in the simulator, batched over users (training, validation, test)."""

from __future__ import annotations

import torch

from slatectl.agents.base import ActMode, Agent, EpisodeBatch
from slatectl.sim.topicrec import TopicRec


@torch.no_grad()
def play_episodes(env: TopicRec, agent: Agent, user_ids: torch.Tensor, seed: int, mode: ActMode,
                  device: torch.device | str = "cpu", record: dict[str, torch.Tensor] | None = None) -> EpisodeBatch:
    """Run B = len(user_ids) users for one episode each with the agent acting in `mode`.

    Returns the episodes in the layout of `EpisodeBatch` (on CPU). The environment is always on CPU;
    observations are moved to the agent's device only for acting. With `record` (a dict), also fills
    record["beliefs"] (B, H, S): the belief each action was taken on, and record["bored"] (B, H, T).
    """
    cfg = env.config
    B, H, K = user_ids.shape[0], cfg.episode_length, cfg.slate_size
    slates = torch.empty(B, H + 1, K, dtype=torch.int64)
    clicks = torch.empty(B, H + 1, K, dtype=torch.float32)
    actions = torch.zeros(B, H, agent.action_dim, dtype=torch.float32)
    rec_slates = torch.empty(B, H, K, dtype=torch.int64)
    rewards = torch.empty(B, H, dtype=torch.float32)
    user_states = torch.empty(B, H + 1, cfg.embedding_dim, dtype=torch.float32)

    first = env.reset(user_ids, seed)
    slates[:, 0], clicks[:, 0], user_states[:, 0] = first.slate, first.clicks, env.user
    agent.begin_episodes(_to(first, device))
    for t in range(H):
        if record is not None:
            belief = agent.belief_state().to("cpu")
            if t == 0:
                record["beliefs"] = torch.empty(B, H, belief.shape[1])
                record["bored"] = torch.empty(B, H, cfg.num_topics, dtype=torch.bool)
            record["beliefs"][:, t] = belief
        slate, action = agent.act(env, mode)
        result = env.step(slate.to("cpu"))
        agent.observe(_to(result.observation, device))
        obs = result.observation
        slates[:, t + 1], clicks[:, t + 1] = obs.slate, obs.clicks
        rec_slates[:, t] = obs.slate
        if agent.action_dim:
            actions[:, t] = action.to("cpu")
        rewards[:, t] = result.reward
        user_states[:, t + 1] = result.user_state
        if record is not None:
            record["bored"][:, t] = result.bored
    return EpisodeBatch(slates, clicks, actions, rec_slates, rewards, user_states)


def _to(observation, device):
    if str(device) == "cpu":
        return observation
    return type(observation)(slate=observation.slate.to(device), clicks=observation.clicks.to(device))
