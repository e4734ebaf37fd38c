"""Collection gives the records it gave before it drove the agents in their stacked form (the golden file
tests/data/collect_golden.json, written by tests/collect_golden.py on the commit before that change).

What must hold: every integer and boolean array (slates, clicks, boredom flags, ends), the rewards and the
simulator's float records (user states, episode returns) are bit-identical; the agent's own float records
(`agent/belief`, `agent/latent`) may differ by float rounding only (the stacked networks run batched
kernels — `baddbmm` over a member dimension — where the solo ones ran `addmm`/nn.GRU, whose last bits may
differ on some CPUs), bounded here by rtol 1e-4 / atol 1e-5 per stored value and on the sums.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import collect_golden

GOLDEN = json.loads((Path(__file__).parent / "data" / "collect_golden.json").read_text())


def _assert_matches(got: dict[str, dict], want: dict[str, dict], case: str) -> None:
    assert set(got) == set(want), case
    for name, w in want.items():
        g = got[name]
        assert (g["dtype"], g["shape"]) == (w["dtype"], w["shape"]), f"{case} {name}"
        if g["sha256"] == w["sha256"]:
            continue
        assert name.startswith("agent/") and "values" in w, f"{case} {name}: the bytes changed"
        np.testing.assert_allclose(g["values"], w["values"], rtol=1e-4, atol=1e-5, err_msg=f"{case} {name}")
        np.testing.assert_allclose([g["sum"], g["abs_sum"]], [w["sum"], w["abs_sum"]],
                                   rtol=0, atol=1e-5 * w["abs_sum"] + 1e-4, err_msg=f"{case} {name}")


@pytest.fixture(scope="module")
def record_cases():
    return collect_golden.record_cases()


@pytest.mark.parametrize("case", sorted(GOLDEN["record"]))
def test_recorded_arrays_match_the_golden_records(record_cases, case):
    _assert_matches(record_cases[case], GOLDEN["record"][case], case)


def test_collected_datasets_of_every_quality_match_the_golden_files(tmp_path):
    got = collect_golden.collect_cases(tmp_path / "home")
    assert set(got) == set(GOLDEN["collect"])
    for case, want in GOLDEN["collect"].items():
        _assert_matches(got[case], want, case)


def test_the_golden_cases_cover_every_agent_and_mode():
    # a golden file that lost cases would make the tests above pass vacuously
    assert set(GOLDEN["record"]) == ({f"{a}/{m}" for a in collect_golden.AGENTS for m in collect_golden.MODES}
                                     | {f"{a}/{m}/large" for a in collect_golden.LARGE for m in collect_golden.MODES})
    assert set(GOLDEN["collect"]) == {f"{q}/{a}" for q in collect_golden.QUALITY_AGENTS for a in collect_golden.ACTS}
    assert all(GOLDEN["record"][c]["rewards"]["shape"] == [collect_golden.EPISODES * 100] for c in GOLDEN["record"]
               if not c.endswith("/large"))
