"""The project's automation condition on a toy chain a -> b -> c, tick by tick (the evaluation
the automation sensor and `make refresh` both make)."""

from __future__ import annotations

import dagster as dg

from dagster_project.automation import PIPELINE_CONDITION

KEYS = [dg.AssetKey(name) for name in ("a", "b", "c")]


def chain(a_value: dict[str, str], b_code_version: str = "1") -> list[dg.AssetsDefinition]:
    @dg.asset(code_version="1", automation_condition=PIPELINE_CONDITION)
    def a() -> dg.Output:
        return dg.Output(a_value["v"], data_version=dg.DataVersion(a_value["v"]))

    @dg.asset(code_version=b_code_version, automation_condition=PIPELINE_CONDITION)
    def b(a: str) -> dg.Output:
        # Only the first character matters: "2" and "2x" give the same output.
        return dg.Output(a[0], data_version=dg.DataVersion(a[0]))

    @dg.asset(code_version="1", automation_condition=PIPELINE_CONDITION)
    def c(b: str) -> dg.Output:
        return dg.Output(b, data_version=dg.DataVersion(b))

    return [a, b, c]


class Ticks:
    def __init__(self, tmp_path) -> None:
        self.instance = dg.DagsterInstance.ephemeral()
        self.io = {"io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))}
        self.cursor = None

    def tick(self, assets: list[dg.AssetsDefinition], run: bool = True) -> list[str]:
        result = dg.evaluate_automation_conditions(
            defs=assets, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        keys = [k for k in KEYS if result.get_num_requested(k)]
        if keys and run:
            assert dg.materialize(
                assets, instance=self.instance, selection=keys, resources=self.io
            ).success
        return [k.to_user_string() for k in keys]

    def settle(self, assets: list[dg.AssetsDefinition]) -> list[str]:
        """Tick and run until nothing is requested (what `make refresh` does)."""
        ran = []
        while requested := self.tick(assets):
            ran += requested
        return ran

    def materialize(self, assets: list[dg.AssetsDefinition], name: str) -> None:
        selection = [dg.AssetKey(name)]
        assert dg.materialize(
            assets, instance=self.instance, selection=selection, resources=self.io
        ).success


def test_missing_assets_are_built_in_one_tick_then_nothing(tmp_path) -> None:
    ticks, assets = Ticks(tmp_path), chain({"v": "1"})
    assert ticks.tick(assets) == ["a", "b", "c"]
    assert ticks.tick(assets) == []
    assert ticks.tick(assets) == []


def test_a_new_data_version_walks_down_until_an_output_is_unchanged(tmp_path) -> None:
    value = {"v": "1"}
    ticks, assets = Ticks(tmp_path), chain(value)
    assert ticks.settle(assets) == ["a", "b", "c"]
    value["v"] = "2"
    ticks.materialize(assets, "a")
    assert ticks.tick(assets) == ["b"]
    assert ticks.tick(assets) == ["c"]
    assert ticks.tick(assets) == []
    # a changes again, but b's output does not: c is left alone.
    value["v"] = "2x"
    ticks.materialize(assets, "a")
    assert ticks.tick(assets) == ["b"]
    assert ticks.tick(assets) == []
    # a rerun with the same output is not a change at all.
    ticks.materialize(assets, "a")
    assert ticks.tick(assets) == []


def test_a_code_version_change_reruns_that_asset_only(tmp_path) -> None:
    value = {"v": "1"}
    ticks = Ticks(tmp_path)
    ticks.settle(chain(value))
    bumped = chain(value, b_code_version="2")
    assert ticks.tick(bumped) == ["b"]  # same output under the new code: c stays
    assert ticks.tick(bumped) == []


def test_an_asset_with_two_changing_inputs_runs_once_after_both(tmp_path) -> None:
    value = {"v": "1"}

    @dg.asset(code_version="1", automation_condition=PIPELINE_CONDITION)
    def a() -> dg.Output:
        return dg.Output(value["v"], data_version=dg.DataVersion(value["v"]))

    @dg.asset(code_version="1", automation_condition=PIPELINE_CONDITION)
    def b(a: str) -> dg.Output:
        return dg.Output(a, data_version=dg.DataVersion(a))

    @dg.asset(code_version="1", automation_condition=PIPELINE_CONDITION)
    def c(a: str, b: str) -> dg.Output:
        return dg.Output(a + b, data_version=dg.DataVersion(a + b))

    ticks, assets = Ticks(tmp_path), [a, b, c]
    assert ticks.settle(assets) == ["a", "b", "c"]
    value["v"] = "2"
    ticks.materialize(assets, "a")
    assert ticks.tick(assets) == ["b"]  # c waits: its other input is about to change
    assert ticks.tick(assets) == ["c"]
    assert ticks.tick(assets) == []


def test_an_in_progress_request_is_not_repeated(tmp_path) -> None:
    value = {"v": "1"}
    ticks, assets = Ticks(tmp_path), chain(value)
    ticks.settle(assets)
    value["v"] = "2"
    ticks.materialize(assets, "a")
    assert ticks.tick(assets, run=False) == ["b"]
    assert ticks.tick(assets, run=False) == []  # requested once, not on every tick
