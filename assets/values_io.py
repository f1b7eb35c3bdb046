"""IO manager for the small typed values that carry lineage (`schemas.lineage`): JSON files at
`{PIPELINE_DATA_DIR}/{asset_key}.json`, any fsspec URL, written atomically.

The ops inside a graph-backed asset hand each other small values too (which shard to run,
what a shard did); those land at `{PIPELINE_DATA_DIR}/op_values/{run_id}/{step}.{output}.json`,
so a step on another worker can read them when the data dir is shared (S3); `make gc` sweeps
a run's folder a week after its last write."""

from __future__ import annotations

from typing import Any, get_args, get_origin

import dagster as dg
import fsspec
from pydantic import BaseModel

from curation.retention import OP_VALUES_DIR
from schemas.atomic import write_bytes_atomic

VALUES_IO_MANAGER_KEY = "values_io_manager"


class PydanticJsonIOManager(dg.ConfigurableIOManager):
    """Stores a pydantic value as JSON; loads it back as the type the input is annotated with."""

    base_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext) -> str:
        if context.has_asset_key:
            return "/".join([self.base_dir.rstrip("/"), *context.asset_key.path]) + ".json"
        output = context if isinstance(context, dg.OutputContext) else context.upstream_output
        assert output is not None  # an op input that is not an asset has an upstream output
        # A mapped step's key holds its mapping key already (`op[shard_3]`); the outputs a
        # planning step yields are told apart by theirs.
        step = output.step_key.replace("[", ".").replace("]", "")
        mapped = output.mapping_key if output.mapping_key and "[" not in output.step_key else ""
        name = ".".join(part for part in (step, output.name, mapped) if part) + ".json"
        return f"{self.base_dir.rstrip('/')}/{OP_VALUES_DIR}/{output.run_id}/{name}"

    def _name(self, context: dg.OutputContext) -> str:
        return context.asset_key.to_user_string() if context.has_asset_key else context.step_key

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, BaseModel):
            raise TypeError(f"{self._name(context)}: expected a pydantic value")
        path = self._path(context)
        write_bytes_atomic(path, obj.model_dump_json(indent=2).encode())
        context.add_output_metadata({"value_path": dg.MetadataValue.path(path)})

    def load_input(self, context: dg.InputContext) -> Any:
        path = self._path(context)
        model = context.dagster_type.typing_type
        if get_origin(model) is list:  # a fan-in: each upstream value is loaded on its own
            (model,) = get_args(model)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"input {context.name} must be annotated with a pydantic model")
        with fsspec.open(path, "rb") as handle:
            return model.model_validate_json(handle.read())
