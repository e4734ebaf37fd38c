"""The project's domain vocabulary, defined once: dataset qualities, dataset file formats, behaviour
policies and device choices.

A leaf module (imports nothing from slatectl) so every layer can use it: the registry's rows, the
collector, the typed configs, and the CLI's Typer options (which list the members as the allowed choices
in `--help`). Members are `str`s, so `Quality.MEDIUM == "medium"` and values stored in the database stay
plain text. A value is parsed into its enum once, where it enters (a CLI option, a config file, a registry
call from a script); the library passes the enum member on and never parses it again.
"""

from __future__ import annotations

from enum import StrEnum


class Quality(StrEnum):
    """How good the policy that collected a dataset is."""

    RANDOM = "random"  # the uniform random slate policy: no checkpoint involved
    MEDIUM = "medium"  # the checkpoint promoted as medium (see `slatectl ckpt promote --help`)
    EXPERT = "expert"  # the checkpoint promoted as expert (highest validation return by default)


# `random` is produced by the uniform random slate policy, so there is no checkpoint to promote for it.
PROMOTABLE_QUALITIES: tuple[Quality, ...] = (Quality.MEDIUM, Quality.EXPERT)

#: The uniform random slate policy's name: the agent that collects `Quality.RANDOM` datasets, the `policy`
#: of their registry rows, and the policy whose registered return is a dataset's ref_min_score.
RANDOM_POLICY = "random"


class DatasetFormat(StrEnum):
    """How a collected dataset is written."""

    NPZ = "npz"        # one numpy .npz file
    MINARI = "minari"  # a Minari (HDF5) dataset folder


class BehaviourMode(StrEnum):
    """Which of a checkpoint's policies collects a dataset."""

    SAMPLE = "sample"  # the stochastic policy as trained (SAC's squashed Gaussian, SlateQ's ε-greedy, ...)
    GREEDY = "greedy"  # the deterministic evaluation policy (what validation returns measure)


class DeviceChoice(StrEnum):
    """Where compute runs (`--device`, `training.device`): `slatectl.device.resolve_device` turns it into
    the torch device "cpu" or "cuda"."""

    AUTO = "auto"  # CUDA when torch sees a GPU (and says so), else the CPU
    CPU = "cpu"
    CUDA = "cuda"
