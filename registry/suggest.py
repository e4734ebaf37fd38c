"""Which checkpoint to promote: the rule, and where the random-policy return comes from.

expert: the highest validation return (earliest step on ties).
medium: the validation return closest to  random + f × (best − random),  f = target fraction (0.5:
        half-way between the random policy and the best checkpoint); earliest step on ties.
The tool only suggests; the person promotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from slatectl.registry.models import Checkpoint
from slatectl.registry.promotions import check_quality
from slatectl.errors import BadInput, SlatectlError

RandomReturnFn = Callable[[str], float]


@dataclass(frozen=True)
class Candidate:
    checkpoint: Checkpoint
    share_of_best: float | None  # validation return / best validation return; None when best <= 0


@dataclass(frozen=True)
class Suggestion:
    env: str
    quality: str
    candidates: list[Candidate]
    suggested: Checkpoint
    best_return: float
    target_return: float
    random_return: float | None
    random_source: str | None
    rule: str


@dataclass(frozen=True)
class RandomReturn:
    value: float
    source: str


def suggest_from(checkpoints: Sequence[Checkpoint], quality: str, random_return: float | None = None,
                 target_fraction: float = 0.5, random_source: str | None = None) -> Suggestion:
    """Apply the rule to `checkpoints` (one env). Pure: no database, no simulator."""
    check_quality(quality)
    if not checkpoints:
        raise BadInput("there are no checkpoints to choose from; train an agent with --save-every first.")
    envs = {c.env for c in checkpoints}
    if len(envs) != 1:
        raise BadInput(f"candidates must come from one env, got {', '.join(sorted(envs))}; pass --env.")
    if not 0.0 <= target_fraction <= 1.0:
        raise BadInput(f"--target-fraction must lie in [0, 1] (got {target_fraction}).")
    ordered = sorted(checkpoints, key=lambda c: (c.step, c.id or 0))
    best = max(ordered, key=lambda c: c.val_return_mean)  # max keeps the first (earliest) of equals
    best_return = best.val_return_mean
    if quality == "expert":
        suggested, target = best, best_return
        rule = f"expert = the highest validation return ({best_return:.3f}, checkpoint {best.id})"
    else:
        if random_return is None:
            raise BadInput("the medium rule needs the random policy's return on this env.")
        target = random_return + target_fraction * (best_return - random_return)
        suggested = min(ordered, key=lambda c: abs(c.val_return_mean - target))
        rule = (f"medium = the validation return closest to random + {target_fraction:g} × (best − random) = "
                f"{random_return:.3f} + {target_fraction:g} × ({best_return:.3f} − {random_return:.3f}) = {target:.3f}")
    candidates = [Candidate(c, c.val_return_mean / best_return if best_return > 0 else None) for c in ordered]
    return Suggestion(env=envs.pop(), quality=quality, candidates=candidates, suggested=suggested,
                      best_return=best_return, target_return=target,
                      random_return=random_return if quality == "medium" else None,
                      random_source=random_source if quality == "medium" else None, rule=rule)


def compute_random_return(env: str) -> float:
    """The uniform random slate policy's mean return, from the simulator package."""
    from slatectl.sim.rollout import random_return

    result = random_return(env)
    return float(getattr(result, "mean", result))


def resolve_random_return(registry, env: str, compute: RandomReturnFn | None = compute_random_return,
                          record: bool = True) -> RandomReturn:
    """A registered random-policy return for `env`, else `compute(env)` (recorded for next time),
    else 0 with a note saying so: the suggestion is then only as good as that assumption."""
    registered = registry.policy_return(env, "random")
    if registered is not None:
        value, artifact = registered
        return RandomReturn(value, f"registered rollout (artifact {artifact.id})")
    if compute is None:
        return RandomReturn(0.0, "assumed 0: no random-policy return is registered for this env")
    try:
        value = float(compute(env))
    except SlatectlError:
        raise
    except Exception as exc:  # the simulator is optional here: fall back to a stated assumption
        return RandomReturn(0.0, f"assumed 0: the random-policy return could not be computed "
                                 f"({type(exc).__name__}: {exc})")
    if record:
        registry.record_policy_return(env, "random", value)
    return RandomReturn(value, "computed with the random policy and recorded in the registry")


class SuggestOps:
    def suggestion_candidates(self, env: str, agent: str | None = None, run_id: int | None = None) -> list[Checkpoint]:
        candidates = self.list_checkpoints(env=env, agent=agent, run_id=run_id)
        if not candidates:
            known = self.checkpoint_envs()
            filters = ([f"agent {agent}"] if agent else []) + ([f"run {run_id}"] if run_id is not None else [])
            where = f" ({', '.join(filters)})" if filters else ""
            raise BadInput(f"there are no checkpoints for env {env}{where}; envs with checkpoints: "
                           f"{', '.join(known) if known else 'none — train an agent with --save-every first'}.")
        return candidates

    def suggest_checkpoint(self, env: str, quality: str, random_return: float | None = None,
                           target_fraction: float = 0.5, *, agent: str | None = None, run_id: int | None = None,
                           compute_random: RandomReturnFn | None = compute_random_return) -> Suggestion:
        """The suggested checkpoint of `env` for `quality` with every candidate and the rule applied.

        For `medium` without `random_return`, the registered random-policy return is used, else it is
        computed with `compute_random` (and recorded), else taken as 0 with a note.
        """
        check_quality(quality)
        candidates = self.suggestion_candidates(env, agent, run_id)
        source = "given"
        if quality == "medium" and random_return is None:
            resolved = resolve_random_return(self, env, compute_random)
            random_return, source = resolved.value, resolved.source
        return suggest_from(candidates, quality, random_return, target_fraction, random_source=source)
