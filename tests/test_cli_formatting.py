"""Human-readable output: table cells without Python reprs, and tables that fit 80 columns by shortening
only text columns."""

from __future__ import annotations

from rich.console import Console

from slatectl.cli.formatting import compact_table, fmt_bytes, format_field, format_settings, format_value


def test_values_print_as_a_person_reads_them():
    assert format_value(None) == "—" and format_value([]) == "—" and format_value(True) == "yes"
    assert format_value(1234567) == "1,234,567" and format_value(45.89372801763639) == "45.894"
    assert format_field("seed", 58407201) == "58407201" and format_field("run_id", 12345) == "12345"
    assert format_field("size", 35_501_962) == fmt_bytes(35_501_962) == "35.5 MB"
    assert format_settings({"training.max_steps": 2000, "agent.hidden": [256], "gems.flag": True, "x": None}) == \
        "training.max_steps=2000, agent.hidden=[256], gems.flag=true, x=null"


def test_a_wide_table_fits_80_columns_and_keeps_every_number_whole():
    columns = [("id", "right"), ("agent", "left"), ("env", "left"), ("seed", "right"), ("status", "left"),
               ("ckpts", "right"), ("best val", "right"), ("last step", "right"), ("disk", "right")]
    row = ["12", "sac-topk-ideal", "focused_topdown", "58407201", "finished", "36", "233.6", "100,000", "3.2 MB"]
    console = Console(width=80, record=True)
    console.print(compact_table("runs", columns, [row], squeezable=("agent", "env"), width=80))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    body = next(line for line in lines if "58407201" in line)
    for cell in ("12", "58407201", "finished", "36", "233.6", "100,000", "3.2 MB"):
        assert cell in body, cell
    # Full width is 2+14+15+8+8+5+8+9+6 = 75 characters plus 10 separators: 85 > 80, so 5 characters go,
    # from the first squeezable column (agent, 14 → 9) while env, listed last, keeps its full name.
    assert "sac-topk…" in body and "focused_topdown" in body


def test_squeezable_columns_give_way_in_order_each_down_to_six_characters():
    columns = [("id", "right"), ("started", "left"), ("agent", "left"), ("env", "left")]
    row = ["7", "2026-11-26 09:24", "sac-topk-ideal", "diffuse_topdown"]
    # 2+16+14+15 = 47 characters (the id column is as wide as its header) plus 5 separators = 52; at width 30
    # 22 must go: started 16 → 6 (10), agent 14 → 6 (8), then env 15 → 11 (4).
    console = Console(width=30, record=True)
    console.print(compact_table("runs", columns, [row], squeezable=("started", "agent", "env"), width=30))
    body = next(line for line in console.export_text().splitlines() if line.lstrip().startswith("7"))
    assert "2026-…" in body and "sac-t…" in body and "diffuse_to…" in body and len(body.rstrip()) <= 30
