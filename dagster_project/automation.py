"""Jobs per stage and the catalogue sensor (off by default: one toggle in the UI)."""

import dagster as dg

from curation.catalogue import resolve_catalogue_uri, source_fingerprint
from dagster_project.resources import PipelineSettings

CATALOGUE_SOURCE = dg.AssetKey("catalogue_source")
# A run that died with its machine (OOM, preemption) is retried once from the failed step.
RUN_RETRY_TAGS = {"dagster/max_retries": "1", "dagster/retry_strategy": "FROM_FAILURE"}

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
    selection=dg.AssetSelection.all() - dg.AssetSelection.keys(CATALOGUE_SOURCE),
    description="Everything, catalogue to evaluated adapter.",
    tags=RUN_RETRY_TAGS,
)


@dg.sensor(
    job=full_pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches CATALOGUE_URI; on a new version, records it and runs what went stale.",
)
def catalogue_changed_sensor(
    context: dg.SensorEvaluationContext, pipeline: PipelineSettings
) -> dg.SensorResult | dg.SkipReason:
    uri = resolve_catalogue_uri(pipeline.catalogue_uri, pipeline.data_dir)
    version = source_fingerprint(uri)
    if version == context.cursor:
        return dg.SkipReason(f"catalogue unchanged ({version})")
    observation = dg.AssetObservation(
        asset_key=CATALOGUE_SOURCE, tags={"dagster/data_version": version}
    )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=version, stale_assets_only=True)],
        asset_events=[observation],
        cursor=version,
    )
