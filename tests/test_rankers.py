"""`first_argmax_of_products`: the CPU's blocked two-level argmax must give exactly the index that
`(queries @ table_t).max(-1).indices` gives, the first maximal item on ties (torch documents `max` and
`argmax` as returning the first maximal index)."""

from __future__ import annotations

import pytest
import torch

from slatectl.agents.rankers import _CPU_BLOCK_ROWS, first_argmax_of_products


def _with_duplicated_items(table_t: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Column `copy` becomes an exact copy of column `source`: every query scores them equally."""
    table_t = table_t.clone()
    for source, copy in pairs:
        table_t[:, copy] = table_t[:, source]
    return table_t


@pytest.mark.parametrize("n_items", [1000, 997])  # 997 is prime: no group size divides it (one level)
def test_equals_max_indices_across_blocks(n_items: int) -> None:
    generator = torch.Generator().manual_seed(0)
    rows = 2 * _CPU_BLOCK_ROWS + 37  # two full blocks and a partial one
    queries = torch.randn(rows, 20, generator=generator)
    table_t = torch.randn(20, n_items, generator=generator)
    expected = (queries @ table_t).max(dim=-1).indices
    assert torch.equal(first_argmax_of_products(queries, table_t), expected)


def test_ties_go_to_the_first_item_within_and_across_groups() -> None:
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(3000, 20, generator=generator)
    base = torch.randn(20, 1000, generator=generator)
    base[:, [5, 130, 777]] *= 3  # long item vectors: each wins for many queries
    # Item 5's copy at 42 sits in the same group of 100; item 130's copy at 905 in a later group;
    # item 777's copy at 310 in an EARLIER group, so there the copy (310) is the first maximal index.
    table_t = _with_duplicated_items(base, [(5, 42), (130, 905), (777, 310)])
    scores = queries @ table_t
    expected = scores.max(dim=-1).indices
    got = first_argmax_of_products(queries, table_t)
    assert torch.equal(got, expected)
    winners = set(got.tolist())
    # The ties really happen (rows whose best item is duplicated) and the first index wins each time.
    assert {5, 130, 310} <= winners and not winners & {42, 905, 777}
