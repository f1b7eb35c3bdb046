"""When assets run: one automation condition, the automation sensor, the jobs per stage.

Every materializable asset carries `PIPELINE_CONDITION`. It is Dagster's `eager()` with the
"respecting data versioning" change: an asset runs when it is missing, when its own code version
changed, or when an input's *data version* changed since the asset was last handled, and never
while it or an input is in progress or about to run. Data versions are content hashes
(assets/_common.py), so a rerun whose output is identical does not trigger anything below it.

The same condition drives both ways of running the pipeline:
- `make ui`: the automation condition sensor (off by default, one toggle in Automation) evaluates
  it every 30 s; the catalogue source is observed every 5 minutes (its own condition in
  assets/ingest.py), so a changed file is noticed.
- `make refresh`: dagster_project/refresh.py evaluates it headlessly and runs what it requests.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

CATALOGUE_SOURCE = dg.AssetKey("catalogue_source")
# A run that died with its machine (OOM, preemption) is retried once from the failed step.
RUN_RETRY_TAGS = {"dagster/max_retries": "1", "dagster/retry_strategy": "FROM_FAILURE"}
# The terminal shows what the steps say (their summaries and progress lines) rather than every
# framework event at DEBUG; the run's event log in the UI keeps all of them.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# Everything that is materialized (the observable catalogue source is observed, not built).
PIPELINE_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.keys(CATALOGUE_SOURCE)


def pipeline_condition() -> dg.AutomationCondition:
    """`eager()` that respects data versions and code versions and builds missing assets."""
    ac = dg.AutomationCondition
    input_changed = ac.any_deps_match(ac.data_version_changed()).with_label(
        "an input's data version changed"
    )
    code_changed = ac.code_version_changed().with_label("code version changed")
    pending = (
        (input_changed | code_changed).since_last_handled().with_label("inputs or code changed")
    )
    # An asset whose input is about to run (or is itself waiting) waits for it, so an asset
    # with several changing inputs runs once, after the last of them, not once per input.
    input_pending = ac.any_deps_match(ac.will_be_requested() | pending).with_label(
        "an input is about to change"
    )
    # Missing assets are built whenever their inputs exist (eager() only builds assets that
    # *become* missing); one that failed waits for new inputs or code instead of retrying
    # every tick.
    missing = (ac.missing() & ~ac.execution_failed()).with_label("missing, not failed")
    return (
        (missing | (pending & ~input_pending))
        & ~ac.any_deps_missing()
        & ~ac.any_deps_in_progress()
        & ~ac.in_progress()
    ).with_label("eager, respecting data versions")


PIPELINE_CONDITION = pipeline_condition()


def with_automation(assets: list) -> list:
    """The materializable assets with `PIPELINE_CONDITION` attached (the one place that sets
    it; the catalogue source's observation schedule is on the source itself)."""
    return [
        a.map_asset_specs(lambda s: s.replace_attributes(automation_condition=PIPELINE_CONDITION))
        if isinstance(a, dg.AssetsDefinition)
        else a
        for a in assets
    ]


automation_sensor = dg.AutomationConditionSensorDefinition(
    "catalogue_automation",
    target=dg.AssetSelection.all(include_sources=True),
    default_status=dg.DefaultSensorStatus.STOPPED,
    run_tags=RUN_RETRY_TAGS,
    description=(
        "Observes CATALOGUE_URI and runs every asset whose automation condition is true: "
        "missing, new code version, or an input with a new data version."
    ),
)


def pipeline_job(name: str, selection: dg.AssetSelection, description: str) -> Any:
    """A job of the pipeline: run retries on, the terminal at INFO."""
    return dg.define_asset_job(
        name, selection=selection, description=description, tags=RUN_RETRY_TAGS, config=RUN_CONFIG
    )


curate_job = pipeline_job(
    "curate",
    dg.AssetSelection.groups("ingest", "images", "curation"),
    "Catalogue -> validated rows -> images -> dedupe -> ledger -> report.",
)
build_dataset_job = pipeline_job(
    "build_dataset",
    dg.AssetSelection.groups("dataset"),
    "Splits, synthetic variants and the Hugging Face dataset.",
)
train_and_evaluate_job = pipeline_job(
    "train_and_evaluate",
    dg.AssetSelection.groups("model"),
    "LoRA fine-tuning and base-vs-tuned evaluation.",
)
full_pipeline_job = pipeline_job(
    "full_pipeline", PIPELINE_SELECTION, "Everything, catalogue to evaluated adapter."
)
