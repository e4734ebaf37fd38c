"""The one training harness of slatectl: hand-written loops, with Lightning Fabric for what a framework
does well in them.

GeMS and MF pretraining train on a `pytorch_lightning.Trainer` (`slatectl/pretrain/*_lightning.py`);
the online RL loop (`slatectl/train/loop.py`) stays our own code and get from
`TrainingHarness` (a `lightning_fabric.Fabric` for one device) the accelerator and device, the precision
of the agent's updates (`--precision 32|bf16-mixed`: Fabric's autocast around the update and its
`backward` for the losses), the seeding (Fabric's `seed_everything`) and the launch. At precision 32
Fabric's autocast does nothing and its backward is `loss.backward()`, so a run is what it was before
Fabric: CPU runs are bit-reproducible for a fixed seed, machine and thread count. bf16-mixed casts the
update's matmuls to bfloat16 while weights, optimizer states, acting, validation and the simulator stay
float32; it is refused for now: on the CPU it made the update slower (BENCHMARKS.md, "Online training on
Lightning Fabric"), and every run trains through the stacked agents, whose hand-written kernels are
float32-only (`slatectl.train.population.check_population`).

Lightning Fabric is imported when a training loop builds its harness or seeds (deferred: this module is
also imported by collection and pretraining, which need neither; docs/architecture.md, rule 4).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from slatectl.device import resolve_device
from slatectl.errors import BadInput

#: `--precision` values: Lightning's names (the update's dtype policy); "32" is Fabric's "32-true".
PRECISIONS = ("32", "bf16-mixed")
#: Where each precision is accepted (bf16-mixed made the CPU update slower: BENCHMARKS.md).
PRECISION_DEVICES = {"32": ("cpu", "cuda"), "bf16-mixed": ("cuda",)}


class TrainingHarness:
    """Lightning Fabric on one device ("cpu" or "cuda", already resolved) at one precision, launched.

    `device` is the torch.device the loop puts its tensors on (`cuda` as before, Fabric's device 0);
    `update(agent, *args)` runs one `agent.update(*args, backward=...)` under Fabric's autocast with
    Fabric's backward, and returns its metrics."""

    def __init__(self, device: str, precision: str = "32"):
        if precision not in PRECISIONS:
            raise BadInput(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
        self.precision = precision
        self.device = torch.device(device)
        self._fabric = None

    @property
    def fabric(self):
        """The Fabric, made and launched at the first update: building a trainer (which checks its request
        and resolves its device) neither imports Lightning nor touches the accelerator."""
        if self._fabric is None:
            from lightning_fabric import Fabric  # deferred: ~1.5 s of import that only training needs (module doc)

            precision = "32-true" if self.precision == "32" else self.precision
            self._fabric = Fabric(accelerator=self.device.type, devices=1, precision=precision)
            self._fabric.launch()
        return self._fabric

    def update(self, agent, *args):
        fabric = self.fabric
        with fabric.autocast():
            return agent.update(*args, backward=fabric.backward)


def training_harness(device: str, precision: str = "32", say: Callable[[str], None] | None = None) -> TrainingHarness:
    """The harness of a training run's `training.device` (`auto`, `cpu`, `cuda`: `resolve_device`, which
    says through `say` what `auto` chose) and `training.precision`; BadInput for a precision the device
    does not take (PRECISION_DEVICES)."""
    resolved = resolve_device(device, say)
    if precision in PRECISIONS and resolved not in PRECISION_DEVICES[precision]:
        raise BadInput(f"--precision {precision} runs on {' or '.join(PRECISION_DEVICES[precision])} only "
                       f"(this run is on {resolved}): on the CPU bfloat16 autocast made the update slower than "
                       "float32 (BENCHMARKS.md); use --precision 32.")
    return TrainingHarness(resolved, precision)


def torch_device(name: str) -> torch.device:
    """The torch.device of a config's `device` (`auto`, `cpu`, `cuda`), checked by `slatectl.device`."""
    return torch.device(resolve_device(name))


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from: torch (CPU and CUDA), NumPy and Python's `random`, with
    Lightning Fabric's `seed_everything` (which also sets PL_GLOBAL_SEED, the seed a Lightning callback
    such as `RegistryCheckpoint` reads). Seeds lie in [0, 2^32), as NumPy needs (`TrainingConfig.validate`)."""
    from lightning_fabric.utilities.seed import seed_everything as fabric_seed_everything  # deferred (module doc)

    fabric_seed_everything(seed, verbose=False)


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's global generators seeded, restoring the caller's RNG state after."""
    device = torch.device(device)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def capture_cuda_graph(record: Callable[[], None], what: str,
                       generators: Sequence[torch.Generator] = ()) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """`record()` captured into a new CUDA graph (recorded, not run: a replay runs it) and None; or, on a
    torch/GPU that cannot capture it, None and why, after warning that `what` runs eagerly from then on.
    `generators`: CUDA generators other than the default one that `record()` draws from (registered, so
    that each replay advances them as an eager call would)."""
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.current_stream()
    try:
        for generator in generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            record()
    except RuntimeError as exc:
        # When the capture fails inside the block, torch.cuda.graph's exit raises from capture_end before it
        # restores the stream, so its capture stream would stay current for all the eager work after this.
        torch.cuda.set_stream(stream)
        failed = f"{type(exc).__name__}: {exc}"[:300]
        warnings.warn(f"{what}: the CUDA graph capture failed, running eagerly ({failed})")
        torch.cuda.synchronize()
        return None, failed
    return graph, None
