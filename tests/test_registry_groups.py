"""Run groups (schema v3): the population a run was trained in, and the migration that added it."""

from __future__ import annotations

from sqlalchemy import inspect, text

from slatectl.registry import SCHEMA_VERSION, open_registry


def test_runs_are_listed_by_group(reg):
    first = reg.start_run("sac-gems", "focused_topdown", 1, {}, group_id="pop-a")
    second = reg.start_run("sac-gems", "diffuse_topdown", 2, {}, group_id="pop-a")
    other = reg.start_run("sac-gems", "focused_topdown", 3, {}, group_id="pop-b")
    solo = reg.start_run("sac-gems", "focused_topdown", 4, {})
    assert sorted(r.id for r in reg.list_runs(group_id="pop-a")) == [first.id, second.id]
    assert [r.id for r in reg.list_runs(group_id="pop-b")] == [other.id]
    assert reg.list_runs(group_id="pop-missing") == []
    assert reg.get_run(solo.id).group_id is None and reg.get_run(second.id).group_id == "pop-a"
    assert len(reg.list_runs()) == 4


def test_a_version_2_registry_gains_an_indexed_group_column(registry_settings):
    with open_registry(registry_settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, {"training": {"random_steps": 10}})
        with reg.engine.begin() as connection:  # back to schema v2: no group column
            connection.execute(text("DROP INDEX ix_runs_group_id"))
            connection.execute(text("ALTER TABLE runs DROP COLUMN group_id"))
            connection.execute(text(f"UPDATE schema_version SET version = 2 WHERE version = {SCHEMA_VERSION}"))
    with open_registry(registry_settings) as reg:
        assert reg.schema_version == SCHEMA_VERSION == 4
        assert reg.get_run(run.id).group_id is None
        indexes = {i["name"]: i["column_names"] for i in inspect(reg.engine).get_indexes("runs")}
        assert indexes.get("ix_runs_group_id") == ["group_id"]
        member = reg.start_run("sac-gems", "focused_topdown", 2, {}, group_id="pop-x")
        assert [r.id for r in reg.list_runs(group_id="pop-x")] == [member.id]
