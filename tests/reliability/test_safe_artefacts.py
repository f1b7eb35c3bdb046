"""Safe artefacts: nothing we write or read can execute code, and no secret leaks into outputs.

- no pickle (or pickle in disguise) and no `torch.load` without `weights_only=True` in our code;
  an exception needs a `# safe-artefacts: allow <why>` comment on its line;
- `trust_remote_code` only in model presets that pin a revision to a commit sha;
- canary secrets in the environment never reach Dagster metadata, logs or files in the data dir.
  (lineage.json has its own canary test: tests/training/test_train.py::
  test_secrets_never_reach_lineage.)
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = (
    "schemas",
    "curation",
    "training",
    "demo",
    "assets",
    "dagster_project",
    "bench",
    "scripts",
)
ALLOW = "# safe-artefacts: allow"
THIS_FILE = Path(__file__).resolve()

# (pattern, why it is unsafe). Each matches the call site, not mere mentions in prose.
UNSAFE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|shelve|joblib)\b", re.M),
     "imports a pickle-based serialiser"),
    (re.compile(r"\b(c?pickle|dill|cloudpickle|joblib|marshal)\.(loads?|Unpickler)\b"),
     "unpickles"),
    (re.compile(r"\bread_pickle\s*\("), "pandas read_pickle unpickles"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle unpickles"),
    (re.compile(r"safe_serialization\s*=\s*False"), "saves a pickle checkpoint"),
    (re.compile(r"trust_remote_code\s*=\s*True"), "runs hub code (only presets may, pinned)"),
)  # fmt: skip
TORCH_LOAD = re.compile(r"\btorch\.load\s*\(")


def _python_files() -> list[Path]:
    files = [p for d in CODE_DIRS if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")]
    files += [p for p in (ROOT / "tests").rglob("*.py") if p.resolve() != THIS_FILE]
    return sorted(files)


def _call_text(source: str, start: int) -> str:
    """The text of a call from its opening parenthesis to the matching closing one."""
    depth = 0
    for end in range(start, len(source)):
        depth += {"(": 1, ")": -1}.get(source[end], 0)
        if depth == 0:
            return source[start : end + 1]
    return source[start:]


def _line(source: str, offset: int) -> str:
    return source[source.rfind("\n", 0, offset) + 1 : source.find("\n", offset)]


def _code_only(source: str) -> str:
    """The source with string literals and comments blanked (offsets kept): a test asserting
    that "safe_serialization=False" is absent is not itself a pickle checkpoint."""
    lines = source.splitlines(keepends=True)
    blank = [list(line) for line in lines]
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type not in (tokenize.STRING, tokenize.COMMENT):
            continue
        (row, col), (end_row, end_col) = token.start, token.end
        for r in range(row - 1, end_row):
            stop = end_col if r == end_row - 1 else len(blank[r])
            for c in range(col if r == row - 1 else 0, stop):
                if blank[r][c] != "\n":
                    blank[r][c] = " "
    return "".join("".join(chars) for chars in blank)


def find_unsafe(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    code = _code_only(source)
    where = path.relative_to(ROOT)
    problems = []
    for pattern, why in UNSAFE_PATTERNS:
        if where.as_posix() == "training/presets.py" and "trust_remote_code" in pattern.pattern:
            continue  # checked semantically below: only pinned presets
        problems += [
            f"{where}: {why}: {_line(source, m.start()).strip()}"
            for m in pattern.finditer(code)
            if ALLOW not in _line(source, m.start())
        ]
    for match in TORCH_LOAD.finditer(code):
        call = _call_text(code, match.end() - 1)
        if not re.search(r"weights_only\s*=\s*True", call) and ALLOW not in _line(
            source, match.start()
        ):
            problems.append(f"{where}: torch.load without weights_only=True: {call[:80]}")
    return problems


def test_no_pickle_and_no_unsafe_torch_load_anywhere() -> None:
    files = _python_files()
    assert len(files) > 20  # the scan really looked at the tree
    problems = [problem for path in files for problem in find_unsafe(path)]
    assert problems == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\n",
        "from cloudpickle import dumps\n",
        "state = torch.load(path)\n",
        "state = torch.load(\n    path,\n    map_location='cpu',\n)\n",
        "model.save_pretrained(out, safe_serialization=False)\n",
        "np.load(f, allow_pickle=True)\n",
        "AutoModel.from_pretrained(name, trust_remote_code=True)\n",
    ],
)
def test_the_scanner_catches_each_unsafe_form(snippet: str) -> None:
    """The grep above would also pass on a scanner that finds nothing: prove each form is
    caught, and that the allow comment (on the offending line) lets it through."""
    assert find_unsafe_in_text(snippet), snippet
    first, _, rest = snippet.partition("\n")
    assert find_unsafe_in_text(f"{first}  {ALLOW}: test\n{rest}") == []


def test_weights_only_torch_load_is_fine() -> None:
    assert find_unsafe_in_text("torch.load(\n    path,\n    weights_only=True,\n)\n") == []


def find_unsafe_in_text(source: str) -> list[str]:
    path = ROOT / "tests" / "reliability" / "_scan_probe.py"
    try:
        path.write_text(source)
        return find_unsafe(path)
    finally:
        path.unlink(missing_ok=True)


def test_trust_remote_code_only_in_presets_pinned_to_a_commit() -> None:
    presets = pytest.importorskip("training.presets", reason="training/ not built yet")
    base = presets.ModelPreset
    seen, pending = [], list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        seen.append(cls)
        pending += cls.__subclasses__()
    assert seen, "no presets found"
    remote = [cls for cls in seen if getattr(cls, "trust_remote_code", False)]
    unpinned = [
        cls.__name__
        for cls in remote
        if not re.fullmatch(r"[0-9a-f]{40}", str(getattr(cls, "revision", "") or ""))
    ]
    assert unpinned == [], "trust_remote_code needs `revision` pinned to a commit sha"


# --------------------------------------------------------------------------- secrets

CANARIES = {
    "WANDB_API_KEY": "canary-wandb-5f1d0c9e7a",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-3b8e2d",
    "AWS_ACCESS_KEY_ID": "AKIACANARY000000TEST",
    "HF_TOKEN": "hf_canaryTokenX9q2w3e4r5t6y7u8",
    "HUGGING_FACE_HUB_TOKEN": "hf_canaryHubTokenA1s2d3f4g5h6",
}


def _strings_in(path: Path) -> str:
    """Everything a reader of this file could see: raw bytes, plus decoded Parquet cells
    (zstd pages would hide a canary from a byte search)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        # str() of each value, not a cast: list columns (quality_flags) cannot cast to String.
        text += "\n".join(str(v) for c in frame.columns for v in frame[c].to_list())
    return text


@pytest.mark.slow
def test_secrets_never_reach_metadata_logs_or_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from assets import curation, dataset, images, ingest
    from assets.resources import DownloadSettings, PipelineSettings, parquet_io_manager
    from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager
    from demo import build_demo_catalogue

    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    demo = build_demo_catalogue(tmp_path / "demo", n_rows=400)
    data_dir = str(tmp_path / "data")
    modules = [ingest, images, curation, dataset]
    defs = dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        resources={
            "pipeline": PipelineSettings(data_dir=data_dir, catalogue_uri=str(demo.catalogue_path)),
            "downloads": DownloadSettings(),
            "io_manager": parquet_io_manager(data_dir),
            VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=data_dir),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    with caplog.at_level("DEBUG"):
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, raise_on_error=False
        )
    materialized = {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    assert {"data_quality_report", "training_dataset", "curation_ledger"} <= materialized
    events = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    outputs = {p: _strings_in(p) for p in Path(data_dir).rglob("*") if p.is_file()}
    assert any(p.suffix == ".html" for p in outputs) and any(p.name == "README.md" for p in outputs)
    for name, canary in CANARIES.items():
        assert canary not in events, f"{name} in Dagster events/metadata"
        assert canary not in caplog.text, f"{name} in logs"
        leaked = [str(p) for p, text in outputs.items() if canary in text]
        assert leaked == [], f"{name} written to {leaked}"
