"""Jobs per stage, staleness waves, and the catalogue sensor (off by default: one UI toggle).

Dagster marks only the direct children of a changed asset stale. `make refresh` and the sensor
therefore work in waves: materialize the stale assets whose inputs are final, let their
content-derived data versions decide what went stale next, repeat. A wave whose output is
byte-identical (same data version) stops there instead of recomputing everything below it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._time import get_current_datetime

from assets.resources import PipelineSettings
from curation.catalogue import source_fingerprint

CATALOGUE_SOURCE = dg.AssetKey("catalogue_source")
# A run that died with its machine (OOM, preemption) is retried once from the failed step.
RUN_RETRY_TAGS = {"dagster/max_retries": "1", "dagster/retry_strategy": "FROM_FAILURE"}
# Everything that is materialized (the observable catalogue source is observed, not built).
PIPELINE_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.keys(CATALOGUE_SOURCE)

curate_job = dg.define_asset_job(
    "curate",
    selection=dg.AssetSelection.groups("ingest", "images", "curation"),
    description="Catalogue -> validated rows -> images -> dedupe -> ledger -> report.",
    tags=RUN_RETRY_TAGS,
)
build_dataset_job = dg.define_asset_job(
    "build_dataset",
    selection=dg.AssetSelection.groups("dataset"),
    description="Splits, synthetic variants and the Hugging Face dataset.",
    tags=RUN_RETRY_TAGS,
)
train_and_evaluate_job = dg.define_asset_job(
    "train_and_evaluate",
    selection=dg.AssetSelection.groups("model"),
    description="LoRA fine-tuning and base-vs-tuned evaluation.",
    tags=RUN_RETRY_TAGS,
)
full_pipeline_job = dg.define_asset_job(
    "full_pipeline",
    selection=PIPELINE_SELECTION,
    description="Everything, catalogue to evaluated adapter.",
    tags=RUN_RETRY_TAGS,
)


def staleness_resolver(
    instance: dg.DagsterInstance, asset_graph: BaseAssetGraph
) -> CachingStaleStatusResolver:
    """The resolver the UI and `RunRequest(stale_assets_only=True)` use, so "stale" here means
    exactly what the asset graph shows."""
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    return CachingStaleStatusResolver(instance, asset_graph, loading_context=view)


def staleness(
    instance: dg.DagsterInstance,
    asset_graph: BaseAssetGraph,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
) -> dict[dg.AssetKey, StaleStatus]:
    """Selected assets Dagster marks STALE (code or input data changed) or MISSING."""
    resolver = staleness_resolver(instance, asset_graph)
    keys = selection.resolve(asset_graph) & asset_graph.materializable_asset_keys
    statuses = {key: resolver.get_status(key) for key in keys}
    return {key: status for key, status in statuses.items() if status != StaleStatus.FRESH}


def stale_or_missing_keys(
    instance: dg.DagsterInstance,
    asset_graph: BaseAssetGraph,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
) -> list[dg.AssetKey]:
    return sorted(staleness(instance, asset_graph, selection), key=lambda k: k.to_user_string())


def settled_frontier(
    statuses: Mapping[dg.AssetKey, StaleStatus], asset_graph: BaseAssetGraph
) -> list[dg.AssetKey]:
    """The stale-or-missing assets with no STALE ancestor: their inputs are final.

    A missing ancestor does not hold an asset back: it will get a new data version for sure,
    so waiting for it saves nothing (a fresh instance builds everything in one run). A stale
    one might come out identical, so its descendants wait for the next wave. The set is
    widened to whole multi-assets, which run all their outputs unless they can subset.
    """
    stale = {key for key, status in statuses.items() if status == StaleStatus.STALE}
    settled = {key for key in statuses if not asset_graph.get_ancestor_asset_keys(key) & stale}
    widened = set(settled)
    for key in settled:
        widened |= asset_graph.get(key).execution_set_asset_keys
    return sorted(widened, key=lambda k: k.to_user_string())


def next_wave(
    instance: dg.DagsterInstance,
    asset_graph: BaseAssetGraph,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
) -> list[dg.AssetKey]:
    """What to materialize now; empty when everything selected is up to date."""
    return settled_frontier(staleness(instance, asset_graph, selection), asset_graph)


def wave_run_key(
    instance: dg.DagsterInstance, asset_graph: BaseAssetGraph, wave: list[dg.AssetKey]
) -> str:
    """Identity of a wave: its assets, their code versions and their inputs' data versions.

    A wave that failed has the same key on the next tick (nothing it reads changed), so the
    sensor does not relaunch a broken wave every minute; new code or new inputs give a new key.
    """
    resolver = staleness_resolver(instance, asset_graph)
    parts = []
    for key in wave:
        node = asset_graph.get(key)
        inputs = sorted(
            f"{p.to_user_string()}={resolver.get_current_data_version(p).value}"
            for p in node.parent_keys
        )
        parts.append(f"{key.to_user_string()}@{node.code_version}<-{','.join(inputs)}")
    return "wave-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _run_in_progress(instance: dg.DagsterInstance, job_name: str) -> bool:
    runs = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=list(IN_PROGRESS_RUN_STATUSES)), limit=1
    )
    return bool(runs)


@dg.sensor(
    job=full_pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Watches CATALOGUE_URI; on a new version records it, then runs what went stale, "
        "wave by wave (one run per tick), until everything is up to date."
    ),
)
def catalogue_changed_sensor(
    context: dg.SensorEvaluationContext, pipeline: PipelineSettings
) -> dg.SensorResult | dg.SkipReason | dg.RunRequest:
    uri = pipeline.resolved_catalogue_uri()
    version = source_fingerprint(uri)
    asset_graph = context.repository_def.asset_graph
    if version != context.cursor:
        # The observation is stored before run requests are resolved, so the source's children
        # are stale (and selected) by the time this run is created.
        observation = dg.AssetObservation(
            asset_key=CATALOGUE_SOURCE, tags={"dagster/data_version": version}
        )
        children = sorted(
            asset_graph.get(CATALOGUE_SOURCE).child_keys, key=lambda k: k.to_user_string()
        )
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"catalogue-{version}", asset_selection=children)],
            asset_events=[observation],
            cursor=version,
        )
    if _run_in_progress(context.instance, full_pipeline_job.name):
        return dg.SkipReason("a pipeline run is in progress; the next wave waits for it")
    wave = next_wave(context.instance, asset_graph)
    if not wave:
        return dg.SkipReason(f"catalogue unchanged ({version}) and nothing is stale")
    return dg.RunRequest(
        run_key=wave_run_key(context.instance, asset_graph, wave), asset_selection=wave
    )
