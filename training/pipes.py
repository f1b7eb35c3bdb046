"""Optional Dagster Pipes bridge: when launched by the `lora_adapter` / `model_evaluation`
assets, progress lines also land in the Dagster event log. Standalone (or on a GPU box without
`dagster-pipes`) everything here is a no-op, so `training` never needs Dagster installed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_session: Any = None  # the open PipesContext, when there is one


@contextmanager
def dagster_pipes_session() -> Iterator[Any]:
    """Open Pipes if (and only if) a Dagster orchestrator launched this process."""
    global _session
    if "DAGSTER_PIPES_CONTEXT" not in os.environ:
        yield None
        return
    try:
        from dagster_pipes import open_dagster_pipes  # optional dependency
    except ImportError:
        yield None
        return
    with open_dagster_pipes() as pipes:
        _session = pipes
        try:
            yield pipes
        finally:
            _session = None


def forward(event: str, values: dict[str, Any]) -> bool:
    """Send one progress event to the Dagster run log; False outside Pipes (nothing sent)."""
    if _session is None:
        return False
    _session.log.info(json.dumps({"event": event, **values}, default=str))
    return True


def report_materialization(metadata: dict[str, Any], data_version: str | None = None) -> None:
    """Hand the asset its result (metadata + data version) through Pipes; no-op outside Pipes,
    so the launching asset never reads result files from a path it may not share."""
    if _session is not None:
        plain = {k: v for k, v in metadata.items() if _reportable(v)}
        _session.report_asset_materialization(metadata=plain, data_version=data_version)


def _reportable(value: Any) -> bool:
    """Plain scalars, or a typed Pipes value such as {"raw_value": table, "type": "table"}."""
    if isinstance(value, dict):
        return set(value) == {"raw_value", "type"}
    return isinstance(value, str | int | float | bool)
