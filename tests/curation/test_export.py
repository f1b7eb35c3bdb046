from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import datasets
import polars as pl
import pytest
from PIL import Image

from curation.export import (
    FEATURES,
    build_dataset_dict,
    dataset_card,
    log_dataset_artifact,
    save_dataset_dict,
)
from curation.splits import SPLIT_RULE_DOC
from curation.variants import make_synthetic_variants
from schemas.prompt import DEFAULT_QUESTION, format_answer
from schemas.tables import SPLIT_NAMES
from tests.curation.test_variants import SIZE, stored_splits

UPSTREAM = {"curated_products": "abc123", "dataset_splits": "def456"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build and save once; the image store is deleted afterwards to prove self-containment."""
    store = tmp_path_factory.mktemp("store")
    splits = stored_splits(store)
    variants = make_synthetic_variants(splits, str(store), seed=3, min_rows_per_category=20)
    out = tmp_path_factory.mktemp("data") / "hf_dataset"
    card = dataset_card(splits, variants, UPSTREAM, SPLIT_RULE_DOC)
    save_dataset_dict(build_dataset_dict(splits, variants), str(out), card)
    shutil.rmtree(store)
    return {"splits": splits, "variants": variants, "out": out, "card": card}


def test_round_trip_features_and_counts(saved: dict) -> None:
    dsd = datasets.load_from_disk(str(saved["out"]))
    splits, variants = saved["splits"], saved["variants"]
    assert list(dsd) == list(SPLIT_NAMES)
    real = dict(splits.group_by("split").len().iter_rows())
    for name in SPLIT_NAMES:
        ds = dsd[name]
        assert ds.features == FEATURES
        n_synthetic = variants.height if name == "train" else 0
        assert ds.num_rows == real[name] + n_synthetic
        assert sum(ds["is_synthetic"]) == n_synthetic
    held_out = splits.filter(pl.col("split") != "train")["row_id"].to_list()
    assert sorted([*dsd["validation"]["row_id"], *dsd["test"]["row_id"]]) == sorted(held_out)
    assert set([*dsd["validation"]["parent_row_id"], *dsd["test"]["parent_row_id"]]) == {None}


def test_images_decode_after_store_is_gone(saved: dict) -> None:
    dsd = datasets.load_from_disk(str(saved["out"]))
    for name in SPLIT_NAMES:
        for sample in dsd[name].select(range(min(5, dsd[name].num_rows))):
            assert isinstance(sample["image"], Image.Image)
            assert sample["image"].size == (SIZE, SIZE)
    last = dsd["train"][-1]  # a synthetic row
    assert last["is_synthetic"] and last["image"].size == (SIZE, SIZE)


def test_rows_are_trl_chat_samples(saved: dict) -> None:
    train = datasets.load_from_disk(str(saved["out"]))["train"]
    by_id = {r["variant_id"]: r for r in saved["variants"].to_dicts()}
    for row in train:
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"][0] == {"type": "image", "text": None}
        answer = format_answer(row["title"], row["category3_code"], row["full_price"])
        assert row["answer"] == answer
        assert assistant["content"] == [{"type": "text", "text": answer}]
        question = user["content"][1]["text"]
        if row["is_synthetic"]:
            variant = by_id[row["row_id"]]
            assert row["parent_row_id"] == variant["parent_row_id"]
            assert question == variant["question"]
        else:
            assert row["parent_row_id"] is None and question == DEFAULT_QUESTION


def test_card_is_saved_and_describes_the_data(saved: dict) -> None:
    card = (saved["out"] / "README.md").read_text()
    assert card == saved["card"]
    assert "dataset_splits" in card and "def456" in card
    assert "sha256(salt" in card  # the split rule
    assert "oversample:" in card and "`messages`" in card
    train_real = saved["splits"].filter(pl.col("split") == "train").height
    n_var = saved["variants"].height
    assert f"| train | {train_real} | {n_var} | {train_real + n_var} |" in card


def test_resave_replaces_atomically(saved: dict, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    small = build_dataset_dict(saved["splits"].head(0), saved["variants"].head(0))
    save_dataset_dict(small, str(out), "old card")
    dsd = datasets.load_from_disk(str(saved["out"]))
    save_dataset_dict(dsd, str(out), "new card")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no tmp/old dirs left
    assert (out / "README.md").read_text() == "new card"
    assert datasets.load_from_disk(str(out))["train"].num_rows == dsd["train"].num_rows


def test_variant_with_held_out_parent_is_rejected(saved: dict) -> None:
    held_out = saved["splits"].filter(pl.col("split") == "test")["row_id"][0]
    bad = saved["variants"].head(1).with_columns(parent_row_id=pl.lit(held_out))
    with pytest.raises(ValueError, match="parent outside train"):
        build_dataset_dict(saved["splits"], bad)


def test_wandb_artifact_offline_by_default_and_off_when_disabled(
    saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert log_dataset_artifact(str(saved["out"]), "training_dataset", {}) is None
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    ref = log_dataset_artifact(str(saved["out"]), "training dataset", {"rows": 1})
    assert ref is not None and ref.endswith(":training-dataset")
    assert list((tmp_path / "wandb").glob("offline-run-*"))  # nothing went online


def test_wandb_artifact_is_a_reference_aliased_with_the_fingerprint(
    saved: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dataset's files are referenced, not copied into W&B staging, under the alias the
    training run asks for."""
    logged: list = []

    class FakeArtifact:
        def __init__(self, name: str, type: str, metadata: dict) -> None:
            self.name, self.references, self.dirs = name, [], []

        def add_reference(self, uri: str) -> None:
            self.references.append(uri)

        def add_dir(self, path: str) -> None:
            self.dirs.append(path)

    class FakeRun:
        path = "entity/project/run1"

        def __enter__(self) -> FakeRun:
            return self

        def __exit__(self, *exc: object) -> None: ...

        def log_artifact(self, artifact: FakeArtifact, aliases: list[str] | None = None) -> None:
            logged.append((artifact, aliases))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: FakeRun()
    fake.Artifact = FakeArtifact
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    ref = log_dataset_artifact(str(saved["out"]), "catalogue-dataset", {}, alias="abc123")
    assert ref == "entity/project/run1:catalogue-dataset:abc123"
    ((artifact, aliases),) = logged
    assert aliases == ["abc123"] and artifact.dirs == []
    assert artifact.references == [Path(saved["out"]).resolve().as_uri()]
