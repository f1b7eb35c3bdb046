"""Reading the exported `training_dataset` (a DatasetDict on disk) and describing it for lineage.

`datasets` is imported lazily: it is needed to read the export, not to import `training`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from schemas.prompt import DEFAULT_QUESTION
from training.collate import Sample


def load_splits(dataset_dir: str) -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the box
        raise ImportError("reading the training dataset needs `pip install datasets`") from exc
    loaded = datasets.load_from_disk(dataset_dir)
    missing = [s for s in ("train", "validation") if s not in loaded]
    if missing:
        raise ValueError(f"{dataset_dir} lacks splits {missing}; found {list(loaded)}")
    return loaded


def question_and_answer(row: dict[str, Any]) -> tuple[str, str]:
    """From the TRL messages (the export's source of truth), falling back to `answer`."""
    question, answer = DEFAULT_QUESTION, row.get("answer") or ""
    for message in row.get("messages") or []:
        texts = [
            part.get("text") or ""
            for part in message.get("content") or []
            if part.get("type") == "text"
        ]
        if message.get("role") == "user" and texts:
            question = texts[-1]
        elif message.get("role") == "assistant" and texts:
            answer = texts[-1]
    return question, answer


def to_sample(row: dict[str, Any]) -> Sample:
    question, answer = question_and_answer(row)
    return Sample(image=row["image"].convert("RGB"), question=question, answer=answer)


class SampleView:
    """Map-style dataset over a split, decoding images lazily (works with DataLoader workers)."""

    def __init__(self, split: Any) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Sample:
        return to_sample(self.split[int(index)])


def tokenizer_corpus(train_split: Any) -> list[str]:
    """Text the tiny tokenizer is trained on: train answers and questions only (no test text)."""
    columns = train_split.select_columns(["messages", "answer"])
    texts: list[str] = []
    for row in columns:
        question, answer = question_and_answer(row)
        texts.extend([answer, question])
    return texts


def dataset_fingerprints(dataset: Any) -> dict[str, str]:
    return {name: str(getattr(dataset[name], "_fingerprint", "")) for name in dataset}


def combined_fingerprint(fingerprints: dict[str, str]) -> str:
    """One value for lineage: changes when any split's content fingerprint changes."""
    payload = "|".join(f"{k}:{fingerprints[k]}" for k in sorted(fingerprints))
    return hashlib.sha256(payload.encode()).hexdigest()


def sorted_ids_sha256(row_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(row_ids)).encode()).hexdigest()


def split_row_ids_sha256(dataset: Any) -> dict[str, str]:
    """Per split, a hash of its row_id set: two runs trained on the same rows match exactly."""
    return {name: sorted_ids_sha256(dataset[name]["row_id"]) for name in dataset}
