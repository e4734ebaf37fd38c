"""`RegistryCheckpoint`: a Lightning callback that records a LightningModule's checkpoints in the slatectl
registry — the registry's replacement for Lightning's `ModelCheckpoint` (docs/lightning.md).

What it does, on the global-rank-zero process only (other ranks hold the same weights under DDP):
- at the start of `fit`, it starts a registry run (or claims the run id it was given): agent = the
  `agent` argument, else `hparams["agent"]`, else the module's class name; env = the `env` argument,
  else `hparams["env"]`; seed = the `seed` argument, else `hparams["seed"]`, else the seed Lightning's
  `seed_everything` set (`PL_GLOBAL_SEED`), else 0; config = the module's hyper-parameters (made
  JSON-safe) and this callback's settings;
- every `every_n_train_steps` optimizer steps and/or at the end of each validation, it registers the
  module's `state_dict` as a checkpoint at `trainer.global_step` through
  `slatectl.train.checkpoints.register_checkpoint`, the same path `slatectl train` uses (file written to
  a temporary name, fsynced, renamed, SHA-256 recorded; the row only after the file is complete);
- the checkpoint's validation return is the monitored metric (`monitor`, from `trainer.callback_metrics`,
  the newest value logged, as `ModelCheckpoint` reads it). The registry ranks checkpoints by "higher is
  better" (`best`, `ckpt promote --quality expert`), so with `mode="min"` the validation return is the
  metric negated (a val_loss of 0.25 is recorded as −0.25) and the run's config says so;
- each validation also records a point of the run's learning curve (`slatectl inspect run`);
- the run ends `finished`, `interrupted` (Ctrl-C) or `failed` with the exception's message.

The env must be one of the simulator's environments (`slatectl env list`): promotions and datasets are
per environment, and `ckpt list --env` / `ckpt promote --env` accept only those names. A step is saved
at most once (a validation at a step already saved records only its learning-curve point). When the
monitored metric has not been logged yet (a step save before the first validation), the save is skipped
with a warning: a registered checkpoint always has a validation return.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import Any, Literal, Mapping

import pytorch_lightning as pl
import torch

from slatectl.configs import env_names
from slatectl.errors import BadInput
from slatectl.registry import Registry, RunStatus, open_registry
from slatectl.settings import Settings
from slatectl.train.checkpoints import register_checkpoint
from slatectl.train.evaluation import Evaluation

#: A save or a train batch sends the run's heartbeat when this many seconds passed since the last one
#: (well under the registry's stale-after time, so a live run never shows as stale).
HEARTBEAT_EVERY_S = 30.0
MODES = ("min", "max")


class RegistryCheckpoint(pl.Callback):
    """Register the LightningModule's weights as slatectl checkpoints (module docstring).

    Arguments follow `ModelCheckpoint` where they mean the same: `monitor` (a metric the module logs),
    `mode` ("max" or "min"), `every_n_train_steps` (None: no step-based saves). `save_on_validation`
    (default: True unless `every_n_train_steps` is given) saves at the end of each validation. `registry`
    defaults to the one the CLI would open (SLATECTL_HOME, SLATECTL_REGISTRY_URL); `run_id` continues an
    existing run instead of starting one. After `fit`, `run_id` and `checkpoint_ids` say what was recorded.
    """

    def __init__(self, monitor: str, mode: Literal["min", "max"] = "max", every_n_train_steps: int | None = None,
                 save_on_validation: bool | None = None, *, env: str | None = None, agent: str | None = None,
                 seed: int | None = None, run_id: int | None = None, registry: Registry | None = None) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise BadInput("RegistryCheckpoint needs monitor=<a metric the module logs>: every registered "
                           "checkpoint has a validation return.")
        if mode not in MODES:
            raise BadInput(f"RegistryCheckpoint mode must be 'min' or 'max', got {mode!r}.")
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool)
                                                or not isinstance(every_n_train_steps, int) or every_n_train_steps < 1):
            raise BadInput(f"every_n_train_steps must be a whole number >= 1 or None, got {every_n_train_steps!r}.")
        if save_on_validation is None:
            save_on_validation = every_n_train_steps is None
        if every_n_train_steps is None and not save_on_validation:
            raise BadInput("RegistryCheckpoint would never save: give every_n_train_steps or save_on_validation=True.")
        if env is not None:
            check_env(env)
        if seed is not None:
            seed = check_seed(seed)
        self.monitor, self.mode = monitor, mode
        self.every_n_train_steps, self.save_on_validation = every_n_train_steps, bool(save_on_validation)
        self.env, self.agent, self.seed = env, agent, seed
        self.run_id = run_id
        self.registry = registry
        self.checkpoint_ids: list[int] = []
        self._owns_registry = False
        self._saved_steps: set[int] = set()
        self._validated_steps: set[int] = set()
        self._last_heartbeat = 0.0
        self._pending_step: int | None = None  # a step save due, made before the weights change
        self._active = False  # between the start and the end of `fit` on rank zero: only then it records

    # -- Lightning hooks ----------------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self.registry is None:
            self.registry, self._owns_registry = open_registry(Settings.resolve()), True
        if self.run_id is None:
            run = self.registry.start_run(*self.describe_run(pl_module))
            self.run_id = run.id
        else:
            self.registry.claim_run(self.run_id)
        self._active = True
        self._last_heartbeat = time.monotonic()

    # A step save is due after the batch's optimizer step but made just before the weights next change
    # (the next batch's start, or the end of training), or at the end of a validation that runs in
    # between: that validation's metric then belongs to exactly these weights.
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active:
            return
        step = trainer.global_step
        if self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0:
            self._pending_step = step
        self._heartbeat_if_due()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._save_pending(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_pending(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._active:
            return
        step = trainer.global_step
        value = self.monitored_value(trainer)
        if value is not None and step not in self._validated_steps:
            self.registry.record_validation(self.run_id, step, value, 0.0, 1)
            self._validated_steps.add(step)
        self._save_pending(trainer, pl_module)
        if self.save_on_validation:
            self.save(trainer, pl_module, step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active:
            self._active = False
            status = RunStatus.INTERRUPTED if trainer.interrupted else RunStatus.FINISHED
            self.registry.finish_run(self.run_id, status)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self._active:
            return
        self._active = False
        if isinstance(exception, KeyboardInterrupt):
            self.registry.finish_run(self.run_id, RunStatus.INTERRUPTED)
        else:
            self.registry.finish_run(self.run_id, RunStatus.FAILED, f"{type(exception).__name__}: {exception}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._owns_registry and self.registry is not None:
            self.registry.close()
            self.registry, self._owns_registry = None, False

    # A Lightning checkpoint of the trainer (ckpt_path=... resume) brings the registry run back with it.
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "saved_steps": sorted(self._saved_steps),
                "validated_steps": sorted(self._validated_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.run_id is None:
            self.run_id = state_dict.get("run_id")
        self._saved_steps = set(state_dict.get("saved_steps", ()))
        self._validated_steps = set(state_dict.get("validated_steps", ()))

    # -- what it records ----------------------------------------------------------------------------------

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> int | None:
        """Register the module's weights at `step` (once per step); the checkpoint id, or None if skipped."""
        if step in self._saved_steps:
            return None
        value = self.monitored_value(trainer)
        if value is None:
            warnings.warn(f"RegistryCheckpoint: {self.monitor!r} has not been logged yet at step {step}; "
                          "nothing registered for this step.", stacklevel=2)
            return None
        checkpoint = register_checkpoint(self.registry, self.run_id, step, pl_module.state_dict(),
                                         Evaluation(value, 0.0, 1), episode_length=None, trained=step > 0)
        self._saved_steps.add(step)
        self.checkpoint_ids.append(checkpoint.id)
        self._heartbeat_if_due(force=True)
        return checkpoint.id

    def monitored_value(self, trainer: pl.Trainer) -> float | None:
        """The validation return for the newest `monitor` value (negated for mode="min"); None if unlogged.
        BadInput when the metric is not finite: a checkpoint's return must be a number."""
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is None:
            return None
        value = float(metric.item() if isinstance(metric, torch.Tensor) else metric)
        if not math.isfinite(value):
            raise BadInput(f"RegistryCheckpoint: {self.monitor} is {value} at step {trainer.global_step}; "
                           "a checkpoint's validation return must be finite.")
        return -value if self.mode == "min" else value

    def describe_run(self, pl_module: pl.LightningModule) -> tuple[str, str, int, dict[str, Any]]:
        """(agent, env, seed, config) of the run this callback starts for `pl_module`."""
        hparams = dict(pl_module.hparams) if pl_module.hparams else {}
        agent = self.agent or hparams.get("agent") or type(pl_module).__name__
        env = self.env or hparams.get("env")
        if env is None:
            raise BadInput("RegistryCheckpoint needs the run's environment: pass env=... or save it in the "
                           f"module's hyper-parameters (self.save_hyperparameters()); one of {', '.join(env_names())}.")
        check_env(str(env))
        seed = check_seed(self.seed if self.seed is not None else hparams.get("seed", os.environ.get("PL_GLOBAL_SEED", 0)))
        config = {"lightning": {"module": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
                                "monitor": self.monitor, "mode": self.mode,
                                "val_return": f"-{self.monitor}" if self.mode == "min" else self.monitor,
                                "every_n_train_steps": self.every_n_train_steps,
                                "save_on_validation": self.save_on_validation},
                  "hparams": json_safe(hparams)}
        return str(agent), str(env), seed, config

    def _save_pending(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_step is not None and self._active:
            step, self._pending_step = self._pending_step, None
            self.save(trainer, pl_module, step)

    def _heartbeat_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self.registry.heartbeat(self.run_id)
            self._last_heartbeat = now


def check_env(env: str) -> str:
    if env not in env_names():
        raise BadInput(f"unknown environment {env!r} for a registry run; one of {', '.join(env_names())} "
                       "(promotions and datasets are per environment).")
    return env


def check_seed(value: Any) -> int:
    """A run's seed: a whole number in [0, 2^63) (the registry's range), from an argument, the
    hyper-parameters or PL_GLOBAL_SEED (a string)."""
    try:
        seed = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        seed = None
    if seed is None or not 0 <= seed < 2**63:
        raise BadInput(f"the run's seed must be a whole number in [0, 2^63), got {value!r}.")
    return seed


def json_safe(value: Any) -> Any:
    """`value` with everything JSON cannot hold replaced by its repr (hyper-parameters may hold modules,
    paths, tensors); the registry stores a run's config as JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
