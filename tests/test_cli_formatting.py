"""Human-readable output: table cells without Python reprs, and tables that fit 80 columns by shortening
only text columns."""

from __future__ import annotations

from rich.console import Console

from slatectl.cli.formatting import (DROP, SQUEEZE, WRAP, compact_table, fmt_bytes, format_field, format_settings,
                                     format_value, print_record)


def test_values_print_as_a_person_reads_them():
    assert format_value(None) == "—" and format_value([]) == "—" and format_value(True) == "yes"
    assert format_value(1234567) == "1,234,567" and format_value(45.89372801763639) == "45.894"
    assert format_field("seed", 58407201) == "58407201" and format_field("run_id", 12345) == "12345"
    assert format_field("size", 35_501_962) == fmt_bytes(35_501_962) == "35.5 MB"
    assert format_settings({"training.max_steps": 2000, "agent.hidden": [256], "gems.flag": True, "x": None}) == \
        "training.max_steps=2000, agent.hidden=[256], gems.flag=true, x=null"


def test_a_wide_table_fits_80_columns_by_dropping_named_columns_never_cutting_names():
    columns = [("id", "right"), ("agent", "left"), ("env", "left"), ("seed", "right"), ("status", "left"),
               ("ckpts", "right"), ("best val", "right"), ("last step", "right"), ("disk", "right")]
    row = ["12", "sac-topk-ideal", "focused_topdown", "58407201", "finished", "36", "233.6", "100,000", "3.2 MB"]
    console = Console(width=80, record=True)
    console.print(compact_table("runs", columns, [row], give_way=(("seed", DROP), ("disk", DROP)), width=80))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    body = next(line for line in lines if "sac-topk-ideal" in line)
    # Full width is 2+14+15+8+8+5+8+9+6 = 75 characters plus 10 separators: 85 > 80. Dropping seed (8 + its
    # separator) leaves 76: disk stays, and every name and number is whole.
    for cell in ("12", "sac-topk-ideal", "focused_topdown", "finished", "36", "233.6", "100,000", "3.2 MB"):
        assert cell in body, cell
    assert "58407201" not in body and "…" not in body
    assert lines[-1].strip() == "not shown at 80 columns: seed (--json has every field)"


def test_columns_give_way_in_the_order_listed_each_as_told():
    columns = [("id", "right"), ("started", "left"), ("flags", "left"), ("env", "left")]
    row = ["7", "2026-11-26 09:24", "best last medium", "diffuse_topdown"]
    # 2+16+16+15 = 49 characters (the id column is as wide as its header) plus 5 separators = 54; at width
    # 40, 14 must go: started 16 → 6 (squeezed, 10), then flags 16 → 12 (wrapped at a space, 4).
    console = Console(width=40, record=True)
    console.print(compact_table("runs", columns, [row], give_way=(("started", SQUEEZE), ("flags", WRAP)), width=40))
    lines = console.export_text().splitlines()
    body = next(line for line in lines if line.lstrip().startswith("7"))
    assert "2026-…" in body and "diffuse_topdown" in body and len(body.rstrip()) <= 40
    assert "best last" in body and lines[lines.index(body) + 1].split() == ["medium"]


def test_a_record_prints_long_tokens_whole_on_their_own_line():
    console = Console(width=40, record=True)
    path = "/a/rather/long/store/path/to/dataset/0123456789abcdef.npz"
    print_record(console, "dataset 1", [("id", "1"), ("path", path), ("note", "some free text " * 4)])
    lines = console.export_text().splitlines()
    assert lines[0] == "dataset 1" and lines[1].split() == ["id", "1"]
    assert lines[2].strip() == "path" and lines[3] == f"  {path}"  # whole, unwrapped, copyable
    assert all(len(line.rstrip()) <= 40 for line in lines[4:])  # free text wraps under its column
    assert " ".join(" ".join(lines[4:]).split()) == "note " + " ".join(("some free text " * 4).split())
