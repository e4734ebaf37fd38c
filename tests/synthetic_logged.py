"""Small structured logged datasets for the pretraining tests (layout of the simulator's logs:
slates (E, H, K) item ids, clicks (E, H, K) in {0, 1})."""

from __future__ import annotations

import torch

NUM_ITEMS = 1000
SLATE_SIZE = 10


def prototype_slates(
    episodes: int, steps: int = 100, prototypes: int = 20, noise: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Every slate is one of `prototypes` fixed slates with each slot replaced, with probability
    `noise`, by a uniform random item. Clicks: each prototype has a fixed random click pattern
    (each slot clicked w.p. 1/2); replaced slots are never clicked.

    Returns (slates, clicks, z_free_accuracy): the expected slot accuracy of the best decoder that
    ignores z (predicts each slot's most frequent item), the bar a useful latent code must clear.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.randint(0, NUM_ITEMS, (prototypes, SLATE_SIZE), generator=g)
    which = torch.randint(0, prototypes, (episodes, steps), generator=g)
    slates = protos[which].clone()
    replaced = torch.rand(episodes, steps, SLATE_SIZE, generator=g) < noise
    slates[replaced] = torch.randint(0, NUM_ITEMS, (int(replaced.sum()),), generator=g)
    click_patterns = torch.rand(prototypes, SLATE_SIZE, generator=g) < 0.5
    clicks = (click_patterns[which] & ~replaced).long()
    share = torch.bincount(which.flatten(), minlength=prototypes).max().item() / which.numel()
    return slates, clicks, share * (1 - noise)


def topic_user_clicks(
    episodes: int, steps: int = 100, topics: int = 10, p_match: float = 0.5, p_other: float = 0.02, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Item i belongs to topic i // (NUM_ITEMS / topics); each episode (user) likes one topic.
    Slates are uniform random; an item is clicked with p_match if it is of the user's topic, else
    p_other.

    Returns (slates, clicks, best_auc): the AUC of an oracle ranking by topic for "held-out click vs
    uniform item" pairs, i.e. the ceiling for any item embedding on this data.
    """
    g = torch.Generator().manual_seed(seed)
    user_topic = torch.randint(0, topics, (episodes,), generator=g)
    slates = torch.randint(0, NUM_ITEMS, (episodes, steps, SLATE_SIZE), generator=g)
    match = slates // (NUM_ITEMS // topics) == user_topic[:, None, None]
    clicks = (torch.rand(episodes, steps, SLATE_SIZE, generator=g) < torch.where(match, p_match, p_other)).long()
    q = 1.0 / topics  # share of the user's topic among uniform items
    pos_in_topic = q * p_match / (q * p_match + (1 - q) * p_other)
    best_auc = pos_in_topic * (1 - q) + 0.5 * (pos_in_topic * q + (1 - pos_in_topic) * (1 - q))
    return slates, clicks, best_auc
