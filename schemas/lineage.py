"""File names of the lineage contract, shared by `curation` (writes snapshots) and `training`
(copies the manifest beside a checkpoint). No imports: `training` runs without polars/pydantic."""

SNAPSHOT_ROWS_FILE = "rows.parquet"  # inside every dataset snapshot folder
SNAPSHOT_INFO_FILE = "snapshot.json"  # written last: a snapshot without it is incomplete
TRAINING_ROWS_FILE = "training_rows.parquet"  # beside every checkpoint
LINEAGE_FILE = "lineage.json"  # beside every checkpoint
