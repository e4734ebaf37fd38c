"""A small registry for the dataset tests: a tiny GeMS (the env's encoder) and a short SAC+TopK run whose
two checkpoints are promoted as medium (step 10, within the random phase) and expert (step 20)."""

from __future__ import annotations

from dataclasses import dataclass

from slatectl.pretrain.gems_train import GeMSConfig
from slatectl.pretrain.logged import LoggedDataConfig
from slatectl.registry import Artifact, Checkpoint, open_registry
from slatectl.settings import Settings
from slatectl.sim.factory import make_env
from slatectl.train import inputs
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer

ENV = "focused_topdown"
SMALL = ["training.random_steps=10", "training.val_every=10", "training.val_episodes=100", "training.test_episodes=10",
         "agent.batch_size=4", "agent.capacity=50"]


@dataclass
class TrainedHome:
    settings: Settings
    gems: Artifact
    best: Checkpoint
    other: Checkpoint


def tiny_gems(registry, env_name: str = ENV, seed: int = 1) -> Artifact:
    """A GeMS trained for one epoch on 3,000 logged slates: an encoder in seconds (its quality is beside
    the point of the dataset tests)."""
    env = make_env(env_name)
    logged = inputs.ensure_logged_data(registry, env, LoggedDataConfig(episodes=100), say=lambda _: None)
    return inputs.ensure_gems(registry, env, logged, GeMSConfig(max_epochs=1, max_slates=3000), seed=seed,
                              say=lambda _: None)


def trained_home(path, promote_expert: bool = True) -> TrainedHome:
    settings = Settings.resolve(home=path)
    config = resolve_run_config("sac-topk-ideal", ENV, overrides=SMALL, cli_training={"max_steps": 20, "save_every": 10})
    with open_registry(settings) as registry:
        gems = tiny_gems(registry)
        run_id = Trainer(registry, config).run(command="test")[0].run_id
        checkpoints = registry.list_checkpoints(run_id=run_id)
        best = next(c for c in checkpoints if c.is_best)
        other = next(c for c in checkpoints if not c.is_best)
        if promote_expert:
            registry.promote_checkpoint(ENV, "expert", best.id)
        registry.promote_checkpoint(ENV, "medium", other.id)
    return TrainedHome(settings, gems, best, other)
