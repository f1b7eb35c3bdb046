"""IO manager for the small typed values that carry lineage (`schemas.lineage`): JSON files at
`{PIPELINE_DATA_DIR}/{asset_key}.json`, any fsspec URL, written atomically."""

from __future__ import annotations

from typing import Any

import dagster as dg
import fsspec
from pydantic import BaseModel

from schemas.atomic import write_bytes_atomic

VALUES_IO_MANAGER_KEY = "values_io_manager"


class PydanticJsonIOManager(dg.ConfigurableIOManager):
    """Stores a pydantic value as JSON; loads it back as the type the input is annotated with."""

    base_dir: str

    def _path(self, key: dg.AssetKey) -> str:
        return "/".join([self.base_dir.rstrip("/"), *key.path]) + ".json"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, BaseModel):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pydantic value")
        path = self._path(context.asset_key)
        write_bytes_atomic(path, obj.model_dump_json(indent=2).encode())
        context.add_output_metadata({"value_path": dg.MetadataValue.path(path)})

    def load_input(self, context: dg.InputContext) -> Any:
        path = self._path(context.asset_key)
        model = context.dagster_type.typing_type
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"input {context.name} must be annotated with a pydantic model")
        with fsspec.open(path, "rb") as handle:
            return model.model_validate_json(handle.read())
