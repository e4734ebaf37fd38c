"""Which checkpoint to promote: the rule, and the random-policy return it needs.

expert: the highest validation return among trained checkpoints (earliest step on ties).
medium: the validation return closest to  random + f × (best − random),  f = target fraction in (0, 1)
        (0.5: half-way between the random policy and the best checkpoint); earliest step on ties.
Untrained checkpoints (saved within the random phase, before any agent update) are shown but never
suggested: they are the initial weights, not a medium or expert policy. The tool only suggests; the
person promotes.

The registry never runs the simulator: the random-policy return is read from a registered rollout, or
computed by a function the caller passes in (the CLI passes slatectl.collect.random_return).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from slatectl.domain import RANDOM_POLICY, Quality
from slatectl.errors import BadInput, SlatectlError
from slatectl.registry.lookups import check_quality
from slatectl.registry.models import Artifact, Checkpoint

RandomReturnFn = Callable[[str], float]
# A medium suggestion whose return misses the target by more than this share of (best − random) is
# flagged: the saved checkpoints are too coarse to hit the rule's target.
FAR_FROM_TARGET = 0.25


class PolicyReturns(Protocol):
    def policy_return(self, env: str, policy: str) -> tuple[float, Artifact] | None: ...

    def record_policy_return(self, env: str, policy: str, mean: float, std: float | None = None,
                             episodes: int | None = None, seed: int | None = None) -> Artifact: ...


@dataclass(frozen=True)
class Candidate:
    checkpoint: Checkpoint
    share_of_best: float | None  # validation return / best validation return; None when best <= 0
    untrained: bool = False  # saved before any agent update: shown, never suggested
    same_file_as: tuple[int, ...] = ()  # other candidates with the same SHA-256 (identical weights)


@dataclass(frozen=True)
class Suggestion:
    env: str
    quality: Quality
    candidates: list[Candidate]
    suggested: Checkpoint
    best_return: float
    target_return: float
    random_return: float | None
    random_source: str | None
    rule: str
    warnings: tuple[str, ...] = ()
    # A random-policy return computed for this suggestion and not yet registered (the caller records it
    # once the promotion was actually made, so a refused promotion writes nothing).
    unrecorded_random_return: float | None = None


@dataclass(frozen=True)
class RandomReturn:
    value: float
    source: str
    recorded: bool = True  # False: computed now and not (yet) registered, or an assumption


def check_target_fraction(fraction: float) -> float:
    if fraction is None or not math.isfinite(float(fraction)) or not 0.0 < float(fraction) < 1.0:
        raise BadInput(f"--target-fraction must lie strictly between 0 and 1 (got {fraction}); 0.5 puts the medium "
                       "target half-way between the random policy and the best checkpoint.")
    return float(fraction)


def is_untrained(checkpoint: Checkpoint) -> bool:
    return checkpoint.trained is False


def untrained_ahead(checkpoints: Sequence[Checkpoint]) -> tuple[Checkpoint, Checkpoint] | None:
    """(best untrained, best trained) when an untrained checkpoint has a higher validation return than every
    trained one (earliest of equals), else None."""
    untrained = [c for c in checkpoints if is_untrained(c)]
    trained = [c for c in checkpoints if not is_untrained(c)]
    if not untrained or not trained:
        return None
    ordered = lambda group: sorted(group, key=lambda c: (c.step, c.id or 0))  # noqa: E731
    best_untrained = max(ordered(untrained), key=lambda c: c.val_return_mean)
    best_trained = max(ordered(trained), key=lambda c: c.val_return_mean)
    return (best_untrained, best_trained) if best_untrained.val_return_mean > best_trained.val_return_mean else None


def explain_untrained_ahead(untrained: Checkpoint, trained: Checkpoint) -> str:
    """Why an untrained checkpoint can beat the trained ones, for a person reading a short run's results."""
    return (f"untrained checkpoint {untrained.id} (step {untrained.step:,}) has a higher validation return "
            f"({untrained.val_return_mean:,.1f}) than every trained checkpoint (best: {trained.val_return_mean:,.1f}, "
            f"checkpoint {trained.id}). That is expected early in training: an untrained actor outputs an almost "
            "constant action, which a pretrained decoder (GeMS) already turns into a sensible slate, and the first "
            "updates often move the actor away from it before later ones improve on it; train longer to see "
            "learning (docs/algorithms.md §6.1 shows a longer run). Untrained checkpoints are never suggested.")


def suggest_from(checkpoints: Sequence[Checkpoint], quality: Quality | str, random_return: float | None = None,
                 target_fraction: float = 0.5, random_source: str | None = None) -> Suggestion:
    """Apply the rule to `checkpoints` (one env). Pure: no database, no simulator."""
    quality = check_quality(quality)
    if not checkpoints:
        raise BadInput("there are no checkpoints to choose from; train an agent with --save-every first.")
    envs = {c.env for c in checkpoints}
    if len(envs) != 1:
        raise BadInput(f"candidates must come from one env, got {', '.join(sorted(envs))}; pass --env.")
    env = envs.pop()
    target_fraction = check_target_fraction(target_fraction)
    ordered = sorted(checkpoints, key=lambda c: (c.step, c.id or 0))
    trained = [c for c in ordered if not is_untrained(c)]
    if not trained:
        raise BadInput(f"every checkpoint of {env} is untrained (saved within the random phase, before any agent "
                       "update), so none is a medium or expert policy; train longer than the random phase "
                       "(configs/training.yaml: random_steps) with --save-every.")
    best = max(trained, key=lambda c: c.val_return_mean)  # max keeps the first (earliest) of equals
    best_return = best.val_return_mean
    warnings: list[str] = []
    if quality == Quality.EXPERT:
        suggested, target = best, best_return
        rule = f"expert = the highest validation return among trained checkpoints ({best_return:,.1f}, checkpoint {best.id})"
    else:
        if random_return is None:
            raise BadInput("the medium rule needs the random policy's return on this env.")
        target = random_return + target_fraction * (best_return - random_return)
        suggested = min(trained, key=lambda c: abs(c.val_return_mean - target))
        rule = (f"medium = the validation return closest to random + {target_fraction:g} × (best − random), best "
                f"among trained checkpoints: "
                f"{random_return:,.3f} + {target_fraction:g} × ({best_return:,.3f} − {random_return:,.3f}) = {target:,.3f}")
        span = best_return - random_return
        miss = abs(suggested.val_return_mean - target)
        if span <= 0:
            warnings.append(f"the best checkpoint ({best_return:,.1f}) is no better than the random policy "
                            f"({random_return:,.1f}): no checkpoint here is a meaningful medium policy.")
        elif miss > FAR_FROM_TARGET * span:
            warnings.append(f"the suggested checkpoint's return {suggested.val_return_mean:,.1f} is far from the "
                            f"target {target:,.1f} ({miss:,.1f} away, {100 * miss / span:.0f}% of best − random); "
                            "save checkpoints more often (--save-every) to get one near the target.")
    untrained = [c for c in ordered if is_untrained(c)]
    ahead = untrained_ahead(ordered)
    if ahead is not None:
        warnings.append(explain_untrained_ahead(*ahead))
    elif untrained:
        warnings.append(f"{len(untrained)} untrained checkpoint(s) (saved within the random phase, before any "
                        "agent update) are listed but never suggested.")
    by_digest: dict[str, list[int]] = {}
    for c in ordered:
        by_digest.setdefault(c.sha256, []).append(c.id)
    candidates = [Candidate(c, c.val_return_mean / best_return if best_return > 0 else None, is_untrained(c),
                            tuple(i for i in by_digest[c.sha256] if i != c.id)) for c in ordered]
    return Suggestion(env=env, quality=quality, candidates=candidates, suggested=suggested,
                      best_return=best_return, target_return=target,
                      random_return=random_return if quality == Quality.MEDIUM else None,
                      random_source=random_source if quality == Quality.MEDIUM else None, rule=rule,
                      warnings=tuple(warnings))


def resolve_random_return(returns: PolicyReturns, env: str, compute: RandomReturnFn | None = None,
                          record: bool = True) -> RandomReturn:
    """A registered random-policy return for `env`, else `compute(env)` (recorded when `record`), else 0
    with a note saying so: the suggestion is then only as good as that assumption."""
    registered = returns.policy_return(env, RANDOM_POLICY)
    if registered is not None:
        value, artifact = registered
        return RandomReturn(value, f"registered rollout (artifact {artifact.id})")
    if compute is None:
        return RandomReturn(0.0, "assumed 0: no random-policy return is registered for this env", recorded=False)
    try:
        value = float(compute(env))
    except SlatectlError:
        raise
    except Exception as exc:  # the simulator is optional here: fall back to a stated assumption
        return RandomReturn(0.0, f"assumed 0: the random-policy return could not be computed "
                                 f"({type(exc).__name__}: {exc})", recorded=False)
    if not math.isfinite(value):
        raise BadInput(f"the random-policy return computed for {env} is not a finite number ({value}).")
    if record:
        returns.record_policy_return(env, RANDOM_POLICY, value)
        return RandomReturn(value, "computed with the random policy and recorded in the registry")
    return RandomReturn(value, "computed with the random policy", recorded=False)
