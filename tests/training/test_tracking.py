"""W&B wiring: offline by default, no-op when disabled or missing, no secrets in configs."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from PIL import Image

from training.config import TrainConfig, scrub_secrets
from training.tracking import Tracker, WandbTracker, start_tracker


def test_mode_defaults_to_offline_and_honours_env(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert TrainConfig().resolved_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert TrainConfig().resolved_wandb_mode() == "disabled"
    assert TrainConfig(wandb_mode="online").resolved_wandb_mode() == "online"


def test_disabled_or_missing_wandb_gives_a_noop_tracker(monkeypatch, tmp_path):
    assert type(start_tracker("p", "disabled", {}, tmp_path)) is Tracker
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    tracker = start_tracker("p", "offline", {}, tmp_path)
    assert type(tracker) is Tracker and tracker.reference() is None
    tracker.log({"x": 1.0}, step=1)  # callable without effect
    tracker.finish()


class FakeRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs, self.logged, self.artifacts, self.used = kwargs, [], [], []
        self.id, self.project, self.summary = "abc", kwargs["project"], {}
        self.settings = types.SimpleNamespace(mode=kwargs["mode"])

    def log(self, values: dict[str, Any], step: int) -> None:
        self.logged.append((step, values))

    def log_artifact(self, artifact: Any) -> None:
        self.artifacts.append(artifact)

    def use_artifact(self, name: str, type: str) -> None:
        self.used.append((name, type))

    def finish(self) -> None: ...


def fake_wandb() -> Any:
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs: Any) -> FakeRun:
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    class Table:
        def __init__(self, columns: list[str]) -> None:
            self.columns, self.data = columns, []

        def add_data(self, *row: Any) -> None:
            self.data.append(row)

    class Artifact:
        def __init__(self, name: str, type: str, metadata: dict[str, Any]) -> None:
            self.name, self.type, self.metadata, self.dirs = name, type, metadata, []

        def add_dir(self, path: str) -> None:
            self.dirs.append(path)

    module.init, module.Table, module.Artifact = init, Table, Artifact
    module.Image = lambda image: ("image", image.size)
    return module


def test_wandb_run_gets_scrubbed_config_table_artifacts_and_dataset_link(monkeypatch, tmp_path):
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    config = TrainConfig(lineage={"catalogue_uri": "demo", "WANDB_API_KEY": "secret"}).to_dict()
    tracker = start_tracker("proj", "offline", config, tmp_path, "training_dataset:v3")
    assert isinstance(tracker, WandbTracker)
    run = wandb.runs[0]
    assert run.init_kwargs["mode"] == "offline"
    assert "WANDB_API_KEY" not in str(run.init_kwargs["config"])
    assert run.used == []  # offline runs cannot use artifacts: the name is in the config
    assert run.init_kwargs["config"]["wandb_dataset_artifact"] is None
    online = start_tracker("proj", "online", config, tmp_path, "catalogue-dataset:0a1b2c")
    assert wandb.runs[-1].used == [("catalogue-dataset:0a1b2c", "dataset")]
    online.finish()
    image = Image.new("RGB", (8, 8))
    tracker.log_predictions([{"image": image, "truth": "t", "prediction": "p"}], step=3)
    step, values = run.logged[-1]
    assert step == 3 and values["predictions"].data == [(("image", (8, 8)), "t", "p")]
    tracker.log_adapter(Path(tmp_path), "adapter-x", {"best_val_loss": 0.1, "api_token": "s"})
    artifact = run.artifacts[0]
    assert artifact.type == "model" and artifact.dirs == [str(tmp_path)]
    assert "api_token" not in artifact.metadata
    assert tracker.reference()["mode"] == "offline"


def test_scrub_secrets_drops_credential_like_keys():
    kept = scrub_secrets(
        {"catalogue_uri": "x", "HF_TOKEN": "t", "db_password": "p", "aws_secret": 1}
    )
    assert kept == {"catalogue_uri": "x"}
