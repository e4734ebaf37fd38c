"""Pretraining GeMS on logged slates for K ≥ 1 members in lockstep (docs/algorithms.md §2, "Several envs
at once" and "On a device"): `train_gems` trains one, `train_gems_population` several (envs, seeds) as
stacks of the `gems_stack.py` objective, run by `GeMSFit` on either engine (`engines.py`). One Adam over
the stacked tensors has one shared step count, so only members with equal settings and row counts share a
stack (`stack_groups`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from slatectl.config_tools import check_params
from slatectl.harness import capture_cuda_graph, seeded, torch_device
from slatectl.pretrain.data import check_logged_pair, num_validation
from slatectl.pretrain.engines import DEFAULT_ENGINE, ENGINES, ChunkedFit, check_engine, require_finite_losses
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.gems_stack import GeMSStack, member_noise, member_rows, stack_logged

ProgressCallback = Callable[[dict[str, float]], None]
#: (member index in the input order, the epoch row a lone run's ProgressCallback gets)
MemberProgressCallback = Callable[[int, dict[str, float]], None]
BatchCallback = Callable[[int, int, int], None]  # (epoch, batches done in it, batches per epoch)
#: Set to "0" to run the CUDA training step eagerly instead of replaying a captured CUDA graph.
CUDA_GRAPH_ENV = "SLATECTL_GEMS_CUDA_GRAPH"
METRICS_CHUNK = 2_048  # validation slates per member and chunk of the final metrics
VALIDATION_METRICS = ("slate_ce", "click_bce", "kl", "slate_accuracy", "click_accuracy")


@dataclass(frozen=True)
class GeMSConfig:
    """GeMS pretraining settings; defaults = the reference pretrain_GeMS.yml (see docs §2)."""

    latent_dim: int = 32
    lambda_click: float = 0.5
    lambda_KL: float = 1.0
    # The reference's prior regulariser is identically zero; only 0.0 is accepted so that a non-zero
    # value cannot silently do nothing.
    lambda_prior: float = 0.0
    batch_size: int = 256
    lr: float = 1e-3
    max_epochs: int = 15
    val_fraction: float = 0.1
    max_slates: int | None = None  # use only the first max_slates slates (small runs, tests)
    shuffle: bool = True  # reference: False (file order); see docs §2 "Shuffling"
    reparam_noise: str = "variance"  # reference sampler; "std" for the textbook VAE
    num_items: int = 1000
    item_dim: int = 20
    accelerator: str = "cpu"  # the device: cpu | cuda

    def validate(self) -> None:
        check_params("gems", [
            (self.lambda_prior == 0.0, "gems.lambda_prior must be 0.0: GeMS uses a fixed N(0, I) prior (reference "
                                       f"behaviour) (got {self.lambda_prior})"),
            (self.reparam_noise in ("variance", "std"),
             f"gems.reparam_noise must be 'variance' or 'std' (got {self.reparam_noise!r})"),
            *((getattr(self, name) >= 1, f"gems.{name} must be >= 1 (got {getattr(self, name)})")
              for name in ("latent_dim", "batch_size", "max_epochs", "num_items", "item_dim")),
            (self.max_slates is None or self.max_slates >= 2,
             f"gems.max_slates must be >= 2 or null (got {self.max_slates})"),
            (0.0 <= self.val_fraction < 1.0, f"gems.val_fraction must lie in [0, 1) (got {self.val_fraction})"),
            (math.isfinite(self.lr) and self.lr > 0, f"gems.lr must be finite and > 0 (got {self.lr})"),
            *((getattr(self, name) >= 0, f"gems.{name} is a loss weight and must be >= 0 (got {getattr(self, name)})")
              for name in ("lambda_click", "lambda_KL")),
            (self.accelerator in ("cpu", "cuda"), f"gems.accelerator must be cpu or cuda (got {self.accelerator!r})"),
        ])


def build_gems(config: GeMSConfig, slate_size: int = 10) -> GeMS:
    return GeMS(config.num_items, slate_size, config.item_dim, config.latent_dim,
                config.reparam_noise)  # type: ignore[arg-type]


def split_logged(slates: Tensor, clicks: Tensor,
                 config: GeMSConfig) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Flatten (E, H, K) to (E·H, K) if needed, cap at max_slates, hold out the leading val_fraction.

    For episode-major rows the leading rows are the first episodes; with 3-D input the cut is made on
    an episode boundary (unless max_slates cuts inside an episode)."""
    check_logged_pair(slates, clicks, ndim=(2, 3), num_items=config.num_items)
    steps_per_episode = slates.shape[1] if slates.ndim == 3 else 1
    slates = slates.reshape(-1, slates.shape[-1])[:config.max_slates]  # [:None]: every slate
    clicks = clicks.reshape(-1, clicks.shape[-1])[:config.max_slates]
    rows = slates.shape[0]
    if rows % steps_per_episode == 0 and rows // steps_per_episode >= 2:
        n_val = num_validation(rows // steps_per_episode, config.val_fraction) * steps_per_episode
    else:
        n_val = num_validation(rows, config.val_fraction)
    return (slates[n_val:], clicks[n_val:]), (slates[:n_val], clicks[:n_val])


@dataclass(frozen=True)
class GeMSMember:
    """One member: its logged slates/clicks ((E, H, K) or (M, K), as `train_gems` takes), config and seed."""

    slates: Tensor
    clicks: Tensor
    config: GeMSConfig
    seed: int


def _stack_key(member: GeMSMember) -> tuple:
    """What one stack's members share: the config but `max_slates` (it only sets row counts), slate size, row counts."""
    (train_slates, _), (val_slates, _) = split_logged(member.slates, member.clicks, member.config)
    return (dataclasses.replace(member.config, max_slates=None), train_slates.shape[1], train_slates.shape[0],
            val_slates.shape[0])


def stack_groups(members: Sequence[GeMSMember]) -> list[list[int]]:
    """The members' indices grouped into stacks, in first-seen order (ValueError on data `train_gems` rejects)."""
    groups: dict[tuple, list[int]] = {}
    for index, member in enumerate(members):
        groups.setdefault(_stack_key(member), []).append(index)
    return list(groups.values())


def _initial_models(members: Sequence[GeMSMember], slate_size: int,
                    device: torch.device) -> tuple[list[GeMS], list[torch.Generator]]:
    """Each member's initial GeMS (on the CPU) and the generator of its sampling noise: on the CPU at the
    state the global one is in right after the initialisation (docs §2)."""
    models, noise = [], []
    for member in members:
        with seeded(member.seed, device):
            models.append(build_gems(member.config, slate_size))
            generator = torch.Generator(device=device)  # on CUDA a CUDA generator seeded with the seed
            noise.append(generator.set_state(torch.get_rng_state()) if device.type == "cpu" else
                         generator.manual_seed(member.seed))
    return models, noise


class _Step:
    """One Adam step of every member on its training rows `index` (K, B), a device tensor; adds each
    member's loss × B to `loss_sum` (K,)."""

    def __init__(self, stack: GeMSStack, optimizer: torch.optim.Optimizer, train: tuple[Tensor, Tensor],
                 config: GeMSConfig, noise: list[torch.Generator], loss_sum: Tensor) -> None:
        self.stack, self.optimizer, self.config, self.noise, self.loss_sum = stack, optimizer, config, noise, loss_sum
        self.slates, self.clicks = train

    def parameters(self) -> list[Tensor]:
        return self.stack.parameters()

    def __call__(self, index: Tensor) -> None:
        slates, clicks = member_rows(self.slates, index).long(), member_rows(self.clicks, index).float()
        noise = member_noise(self.noise, (index.shape[-1], self.stack.latent_dim), index.device)
        losses = self.stack.terms(slates, clicks, self.config.lambda_click, self.config.lambda_KL, noise)["total"]
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        self.loss_sum.add_(losses.detach() * index.shape[-1])


class _CapturedStep:
    """CUDA: the full-batch step recorded once as a CUDA graph and replayed with new row indices (docs §2 "On
    a device"). The first `WARMUP_STEPS` full batches run eagerly on a side stream (capture needs warmed-up
    kernels and allocator; they are real steps); a smaller last batch runs eagerly (a graph has fixed shapes)."""

    WARMUP_STEPS = 3

    def __init__(self, eager: _Step, batch_size: int, device: torch.device) -> None:
        self.eager, self.batch_size = eager, batch_size
        self.index: Tensor | None = None  # the graph's input rows, (K, batch_size) on the device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_gradients: list[Tensor | None] = []  # the graph's gradient buffers, kept alive
        self.failed: str | None = None  # why capture failed: the step then stays eager
        self.warmed = 0
        self.side_stream = torch.cuda.Stream(device=device)

    @property
    def replaying(self) -> bool:
        return self.graph is not None

    def __call__(self, index: Tensor) -> None:
        if index.shape[-1] != self.batch_size or self.failed is not None:
            self.eager(index)
            return
        if self.warmed < self.WARMUP_STEPS:
            self.side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side_stream):
                self.eager(index)
            torch.cuda.current_stream().wait_stream(self.side_stream)
            self.warmed += 1
            return
        if self.index is None:
            self.index = torch.empty_like(index)
        self.index.copy_(index)
        if self.graph is None and not self._capture():
            self.eager(index)
            return
        self.graph.replay()

    def _capture(self) -> bool:
        """Record the step; False (and eager from then on) if this torch/GPU cannot capture it. Nothing
        recorded has run, so the eager step can take the batch whose capture failed."""
        self.eager.optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph
        self.graph, self.failed = capture_cuda_graph(lambda: self.eager(self.index), "GeMS pretraining",
                                                     generators=self.eager.noise)
        if self.graph is None:
            return False
        # An eager partial batch sets .grad to None; the graph keeps writing these buffers.
        self.graph_gradients = [p.grad for p in self.eager.parameters()]
        return True


@dataclass
class FitOutcome:
    """One member's epochs: history rows, the best validation epoch and a CPU copy of its weights."""

    history: list[dict[str, float]]
    best_val_loss: float = math.inf
    best_epoch: int = -1
    best_state: dict[str, Tensor] | None = None


class GeMSFit(ChunkedFit):
    """The epochs of one stack as an engine runs them (`engines.ChunkedFit`); a chunk is (K, rows) row ids,
    and `end_epoch` makes the epoch's one host read (losses, validation, best epoch, progress)."""

    chunk_batches = 32  # why 32: BENCHMARKS.md, "Kernel notes: pretrain chunks and dtypes"

    def __init__(self, stack: GeMSStack, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                 config: GeMSConfig, noise: list[torch.Generator], shuffles: list[torch.Generator | None],
                 progress_callback: MemberProgressCallback | None = None,
                 batch_callback: BatchCallback | None = None, cuda_graph: bool = True) -> None:
        self.stack, self.train, self.val, self.config, self.shuffles = stack, train, val, config, shuffles
        self.progress_callback, self.batch_callback = progress_callback, batch_callback
        self.device, self.rows = train[0].device, train[0].shape[1]
        capture = cuda_graph and self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(stack.parameters(), lr=config.lr, capturable=capture)
        self.loss_sum = torch.zeros(stack.members, device=self.device)  # in place: a captured step keeps its address
        eager = _Step(stack, self.optimizer, train, config, noise, self.loss_sum)
        self.step: _Step | _CapturedStep = _CapturedStep(eager, config.batch_size, self.device) if capture else eager
        self.outcomes = [FitOutcome(history=[]) for _ in range(stack.members)]
        self.batches_per_epoch = math.ceil(self.rows / config.batch_size)
        self._epoch_batches = 0

    def epoch_chunks(self, rows: int) -> tuple[Tensor, ...]:
        """Every member's row order of the epoch, a fresh permutation from its generator or file order, drawn
        on the CPU (the same batches on every device) and moved to the device in one copy."""
        order = torch.stack([torch.arange(self.rows) if generator is None else
                             torch.randperm(self.rows, generator=generator) for generator in self.shuffles])
        return order.to(self.device).split(rows, dim=1)

    def begin_epoch(self) -> None:
        self.loss_sum.zero_()
        self._epoch_batches = 0

    def run_chunk(self, epoch: int, chunk: Tensor) -> bool:
        for index in chunk.split(self.config.batch_size, dim=1):
            self.step(index)
            self._epoch_batches += 1
            if self.batch_callback is not None:
                self.batch_callback(epoch, self._epoch_batches, self.batches_per_epoch)
        return False

    @torch.no_grad()
    def validation_means(self, names: tuple[str, ...], chunk: int) -> Tensor:
        """(len(names), K) means over each member's validation slates (z = mu) of the named `GeMSStack.terms`
        and `.accuracies`, in chunks of `chunk` rows in file order; NaN (0/0) without validation slates."""
        slates, clicks = self.val
        sums = torch.zeros(len(names), slates.shape[0], device=slates.device)
        for start in range(0, slates.shape[1], chunk):
            s, c = slates[:, start:start + chunk].long(), clicks[:, start:start + chunk].float()
            values = self.stack.terms(s, c, self.config.lambda_click, self.config.lambda_KL, noise=None)
            if "slate_accuracy" in names:
                values.update(self.stack.accuracies(s, c))
            sums += torch.stack([values[name] for name in names]) * s.shape[1]
        return sums / slates.shape[1]

    def end_epoch(self, epoch: int) -> None:
        has_val = self.val[0].shape[1] > 0
        val_losses = self.validation_means(("total",), self.config.batch_size)[0]  # batches as in training
        train_losses, val_values = torch.stack([self.loss_sum / max(self.rows, 1), val_losses]).tolist()
        for k, outcome in enumerate(self.outcomes):
            row = {"epoch": float(epoch), "train_loss": train_losses[k], "val_loss": val_values[k]}
            require_finite_losses("GeMS" if len(self.outcomes) == 1 else f"GeMS (member {k})",
                                  {"training loss": row["train_loss"], "validation loss": row["val_loss"]},
                                  f"epoch {epoch + 1}", optional=() if has_val else ("validation loss",))
            if has_val and row["val_loss"] < outcome.best_val_loss:
                outcome.best_val_loss, outcome.best_epoch = row["val_loss"], epoch
                outcome.best_state = self.stack.member_state_dict(k)
            outcome.history.append(row)
            if self.progress_callback is not None:
                self.progress_callback(k, dict(row))


def train_gems(slates: Tensor, clicks: Tensor, config: GeMSConfig, seed: int,
               progress_callback: ProgressCallback | None = None, batch_callback: BatchCallback | None = None,
               cuda_graph: bool | None = None, engine: str = DEFAULT_ENGINE) -> tuple[GeMS, dict[str, Any]]:
    """Train GeMS on logged slates, (E, H, K) episodes or (M, K) slates, episode-major, as a stack of one;
    return the best-validation model (CPU, eval mode) and metrics. The caller's RNG is left untouched and a
    seed fixes the result on a given device (bit for bit on the CPU). `cuda_graph`: replay the step from a
    CUDA graph on CUDA; None reads CUDA_GRAPH_ENV (on unless "0"), the CLI's switch. `batch_callback` is
    called after each batch is *queued*. `engine`: one of `engines.ENGINES`."""
    member_progress = None if progress_callback is None else lambda k, row: progress_callback(row)
    return train_stacked_gems([GeMSMember(slates, clicks, config, seed)], member_progress, batch_callback,
                              cuda_graph, engine)[0]


def train_gems_population(members: Sequence[GeMSMember], progress_callback: MemberProgressCallback | None = None,
                          batch_callback: BatchCallback | None = None, cuda_graph: bool | None = None,
                          engine: str = DEFAULT_ENGINE) -> list[tuple[GeMS, dict[str, Any]]]:
    """Every member trained as its own `train_gems` run would be, stack by stack (`stack_groups`); one
    (model, metrics) per member in the input order. Callbacks get member indices in the input order.
    Every config is validated before any stack trains."""
    for member in members:
        member.config.validate()
    results: dict[int, tuple[GeMS, dict[str, Any]]] = {}
    for group in stack_groups(members):
        member_progress = None if progress_callback is None else (
            lambda k, row, group=group: progress_callback(group[k], row))
        trained = train_stacked_gems([members[i] for i in group], member_progress, batch_callback, cuda_graph, engine)
        results.update(zip(group, trained))
    return [results[i] for i in range(len(members))]


def train_stacked_gems(members: Sequence[GeMSMember], progress_callback: MemberProgressCallback | None = None,
                       batch_callback: BatchCallback | None = None, cuda_graph: bool | None = None,
                       engine: str = DEFAULT_ENGINE) -> list[tuple[GeMS, dict[str, Any]]]:
    """One stack: members that share a stack key (ValueError otherwise)."""
    for member in members:
        member.config.validate()
    check_engine(engine)
    if not members:
        raise ValueError("a stack needs at least one member")
    if len(members) > 1 and len({_stack_key(m) for m in members}) != 1:
        raise ValueError("members of one stack need equal settings (apart from max_slates), slate sizes and row counts")
    if cuda_graph is None:
        cuda_graph = os.environ.get(CUDA_GRAPH_ENV, "1") != "0"
    splits = [split_logged(m.slates, m.clicks, m.config) for m in members]
    config = members[0].config
    device = torch_device(config.accelerator)
    models, noise = _initial_models(members, splits[0][0][0].shape[1], device)
    train, val = (stack_logged([split[part] for split in splits], config.num_items, device) for part in (0, 1))
    shuffles = [torch.Generator().manual_seed(m.seed) if config.shuffle else None for m in members]
    # enable_grad: independent of a global grad mode the caller left off (simulator rollouts do).
    with torch.enable_grad():
        fit = GeMSFit(GeMSStack(models, device), train, val, config, noise, shuffles, progress_callback,
                      batch_callback, cuda_graph)
        ENGINES[engine](fit)
    return _results(fit, models)


def _results(fit: GeMSFit, models: list[GeMS]) -> list[tuple[GeMS, dict[str, Any]]]:
    """Each member's kept model (its best validation epoch's weights, else the last) and metrics."""
    for k, outcome in enumerate(fit.outcomes):
        if outcome.best_state is not None:
            fit.stack.load_member_state_dict(k, outcome.best_state)
        models[k].load_state_dict(fit.stack.member_state_dict(k))
        models[k].eval()
    # the final metrics in larger chunks: item scores are chunk × slate × N floats
    means = fit.validation_means(VALIDATION_METRICS, max(1, METRICS_CHUNK // fit.stack.members)).tolist()
    results = []
    for k, (model, outcome) in enumerate(zip(models, fit.outcomes)):
        history = outcome.history
        kept = outcome.best_epoch if outcome.best_epoch >= 0 else len(history) - 1
        results.append((model, {
            "epochs_run": len(history),
            "best_epoch": kept,
            "train_loss": history[-1]["train_loss"],  # max_epochs >= 1: never empty
            "train_loss_best_epoch": history[kept]["train_loss"],
            "val_loss": outcome.best_val_loss if outcome.best_state is not None else math.nan,
            "n_train_slates": fit.rows,
            "n_val_slates": int(fit.val[0].shape[1]),
            "history": history,
            **{f"val_{name}": means[i][k] for i, name in enumerate(VALIDATION_METRICS)},
            "cuda_graph": isinstance(fit.step, _CapturedStep) and fit.step.replaying,  # False if capture failed
        }))
    return results

