"""The .npz dataset file: deterministic writing (fixed zip timestamps, so the same arrays always give the
same bytes and hash) and reading back with the metadata decoded."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from slatectl.errors import BadInput

_EPOCH = (1980, 1, 1, 0, 0, 0)
METADATA_KEY = "metadata_json"  # UTF-8 JSON stored as a uint8 array (npz holds arrays only, no pickles)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(arrays[name]), allow_pickle=False)


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a dataset written by `slatectl collect --format npz`: `(arrays, metadata)`.

    `arrays` maps every array name to its (fully loaded) array, e.g. "observations/slate", "actions/slate",
    "rewards", "terminals", "timeouts", "episode_returns" (slatectl/collect/collector.py lists them all);
    `metadata` is the decoded `metadata_json` entry (env, quality, seed, checkpoint and run ids, …), which is
    not repeated in `arrays`. Nothing is unpickled. Episodes end only by the time limit, so `timeouts` is 1
    on each episode's last step and `terminals` is 0 everywhere.

    Example:
        from slatectl.collect import load_npz
        arrays, metadata = load_npz(".slatectl/artifacts/…/dataset.npz")  # `slatectl inspect dataset ID` prints the path
        episodes = arrays["rewards"].reshape(metadata["episodes"], -1)   # (N, H)

    The same by hand: `data = np.load(path)`, `json.loads(data["metadata_json"].tobytes().decode())`.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    raw = arrays.pop(METADATA_KEY, None)
    metadata = json.loads(raw.tobytes().decode("utf-8")) if raw is not None else {}
    return arrays, metadata


def read_npz_metadata(path: str | Path) -> dict[str, Any]:
    """Only the decoded metadata of an npz dataset (the arrays are not read)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if METADATA_KEY not in data.files:
                raise ValueError(f"it has no {METADATA_KEY} entry")
            return json.loads(data[METADATA_KEY].tobytes().decode("utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path} is not a slatectl npz dataset ({exc}).") from exc
