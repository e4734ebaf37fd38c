"""Which torch device a compute command runs on: `auto`, `cpu` or `cuda`, checked before any work."""

from __future__ import annotations

from typing import Callable

import torch

from slatectl.domain import DeviceChoice
from slatectl.errors import BadInput

DEVICES = tuple(DeviceChoice)


def resolve_device(choice: DeviceChoice | str, say: Callable[[str], None] | None = None) -> str:
    """"cpu" or "cuda" for `choice`; `auto` picks CUDA when torch sees a GPU and says so through `say`.

    `cuda` without a usable GPU is bad input (exit 2), not a crash deep inside the first tensor op.
    """
    if not isinstance(choice, DeviceChoice):  # a plain string (a script, a GeMS accelerator): parsed here
        try:
            choice = DeviceChoice(choice)
        except ValueError:
            raise BadInput(f"unknown device {choice!r}; choose one of {', '.join(DEVICES)}.") from None
    if choice == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if choice == "cuda":
        if not available:
            raise BadInput("--device cuda was asked for but torch sees no CUDA GPU here (torch "
                           f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto.")
        return "cuda"
    if available:
        if say is not None:
            say(f"--device auto: using CUDA ({torch.cuda.get_device_name(0)}).")
        return "cuda"
    return "cpu"
