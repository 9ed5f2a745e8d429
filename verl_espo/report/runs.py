"""Reading training runs as veRL logs them: the ``file`` logger's JSON lines, TensorBoard events, Hydra config.

veRL's ``file`` logger (``verl/utils/tracking.py``, ``FileLogger``) writes one line per ``log`` call,
``{"step": <int>, "data": {<metric>: <value>, ...}}``, to ``$VERL_FILE_LOGGER_PATH`` or, when that is unset, to
``$VERL_FILE_LOGGER_ROOT/<project_name>/<experiment_name>.jsonl`` (root default: the working directory). A step is
often logged in several calls (validation, then training), so lines are merged per step. ``orjson`` writes NaN
as ``null``; such values are dropped. The TensorBoard logger (``TENSORBOARD_DIR``, default
``tensorboard_log/<project>/<experiment>``) writes the same keys as scalars; its events also carry wall-clock times.

A run directory may hold any of: file-logger ``*.jsonl`` (top level or one folder down), ``summary.json`` (the
smoke runner's), ``events.out.tfevents.*`` anywhere below it, and the Hydra config (``.hydra/config.yaml``,
``config.yaml``, or ``<sub>/.hydra/config.yaml``). Whatever is missing becomes a note on the run, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "Run",
    "find_config",
    "is_file_logger_record",
    "load_run",
    "load_runs",
    "merge_by_step",
    "metrics_frame",
    "read_file_logger",
    "read_tensorboard",
]

Record = dict[str, Any]  # one file-logger line: {"step": int, "data": {...}}


def metrics_frame(rows: Iterable[tuple[int, dict[str, Any]]]) -> pd.DataFrame:
    """A step-indexed frame of ``(step, {metric: value})`` rows: steps logged in several rows are merged (later
    values win, a missing or null value never overwrites one), non-numbers are dropped, columns are float64."""
    rows = list(rows)
    index = pd.Index([int(step) for step, _ in rows], dtype="int64", name="step")
    frame = pd.DataFrame.from_records([data for _, data in rows], index=index)
    if frame.empty:
        return pd.DataFrame(index=index[:0], dtype="float64")
    numbers = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    return numbers.groupby(level="step").last().dropna(axis=1, how="all").sort_index()


@dataclass
class Run:
    """One training run: its metrics (:func:`metrics_frame`, one row per step), plus what is known of its settings."""

    name: str
    path: Path
    metrics: pd.DataFrame = field(default_factory=lambda: metrics_frame([]))
    config: dict[str, Any] | None = None  # the Hydra config, nested, resolved where possible
    config_path: Path | None = None
    summary: dict[str, Any] | None = None  # the smoke runner's summary.json
    wall_times: pd.Series = field(default_factory=lambda: pd.Series(dtype="float64"))  # step -> unix time (TensorBoard)
    sources: list[Path] = field(default_factory=list)  # the files the metrics came from
    notes: list[str] = field(default_factory=list)  # what was missing or skipped while reading

    def keys(self) -> set[str]:
        """Every metric name logged at least once."""
        return set(self.metrics.columns)

    def has(self, key: str) -> bool:
        return key in self.metrics.columns

    def series(self, key: str) -> pd.Series:
        """One metric's logged values, indexed by step (empty when it was never logged)."""
        if key not in self.metrics.columns:
            return pd.Series(dtype="float64", index=pd.Index([], dtype="int64", name="step"), name=key)
        return self.metrics[key].dropna()


# ----------------------------------------------------------------------------- the file logger
def is_file_logger_record(obj: Any) -> bool:
    """Whether ``obj`` has the shape of a ``FileLogger`` line: ``{"step": int, "data": dict}``."""
    return isinstance(obj, dict) and isinstance(obj.get("step"), int) and isinstance(obj.get("data"), dict)


def read_file_logger(path: str | Path, offset: int = 0) -> tuple[list[Record], int]:
    """The complete lines of a file-logger ``.jsonl`` after byte ``offset``, and the offset after them.

    Meant to be called again on a file that is still being written (a partial last line is left for the next
    call), which is how a runner can follow a live run. Lines that are not file-logger records are skipped.
    """
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    records = []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if is_file_logger_record(obj):
            records.append(obj)
    return records, offset + end


def merge_by_step(records: Iterable[Record]) -> dict[int, dict[str, float]]:
    """File-logger records merged per step (:func:`metrics_frame`) as ``{step: {metric: value}}``."""
    frame = metrics_frame((record["step"], record["data"]) for record in records)
    return {int(step): row.dropna().to_dict() for step, row in frame.iterrows()}


def _file_logger_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """``*.jsonl`` at the top of ``run_dir`` or one folder down: (file-logger files, other jsonl files)."""
    found, other = [], []
    for path in sorted([*run_dir.glob("*.jsonl"), *run_dir.glob("*/*.jsonl")]):
        with open(path, "rb") as f:
            first = f.readline()
        try:  # an empty file is a file logger that has not logged yet (a run that stopped before step 1)
            ok = not first.strip() or is_file_logger_record(json.loads(first))
        except ValueError:
            ok = False
        (found if ok else other).append(path)
    return found, other


# ----------------------------------------------------------------------------- TensorBoard
def read_tensorboard(files: Sequence[Path]) -> tuple[pd.DataFrame, pd.Series]:
    """Scalars of TensorBoard event files: (a :func:`metrics_frame`, the latest wall time of each step).

    Needs the ``tensorboard`` package (raises ``ImportError`` without it). Reads both encodings of a scalar:
    ``simple_value`` (``torch.utils.tensorboard``, what veRL uses) and a scalar tensor (TF2 summaries).
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    rows: list[tuple[int, dict[str, float]]] = []
    wall: list[tuple[int, float]] = []
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = tensor_util.make_ndarray(value.tensor).item()
                else:
                    continue
                rows.append((int(event.step), {value.tag: number}))
                wall.append((int(event.step), float(event.wall_time)))
    times = pd.DataFrame(wall, columns=["step", "wall_time"]).groupby("step")["wall_time"].max()
    return metrics_frame(rows), times.astype("float64")


# ----------------------------------------------------------------------------- settings
def find_config(run_dir: str | Path) -> Path | None:
    """The run's Hydra config: ``.hydra/config.yaml``, ``config.yaml``, else the newest ``*/.hydra/config.yaml``."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml"):
        if candidate.is_file():
            return candidate
    nested = sorted(run_dir.glob("*/.hydra/config.yaml"), key=lambda p: p.stat().st_mtime)
    return nested[-1] if nested else None


def _load_config(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """The config as nested containers, interpolations resolved (left as written where they cannot be)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001  (a broken config must not stop the report)
        notes.append(f"could not read the config {path}: {exc}")
        return None
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # noqa: BLE001  (e.g. a resolver of a package not installed here)
        notes.append(f"config {path.name}: interpolations left unresolved ({type(exc).__name__})")
        return OmegaConf.to_container(cfg, resolve=False)


# ----------------------------------------------------------------------------- a whole run
def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read one run: a run directory (see the module doc) or a single file-logger ``.jsonl``."""
    path = Path(path)
    run = Run(name=name or (path.stem if path.is_file() else path.resolve().name), path=path)
    if not path.exists():
        run.notes.append(f"{path} does not exist")
        return run
    run_dir = path.parent if path.is_file() else path

    jsonl, other = ([path], []) if path.is_file() else _file_logger_files(path)
    records = [record for file in jsonl for record in read_file_logger(file)[0]]
    run.metrics = metrics_frame((record["step"], record["data"]) for record in records)
    run.sources += jsonl
    if len(jsonl) > 1:
        run.notes.append(f"merged {len(jsonl)} file-logger files (later files win on a shared step)")
    if other:
        run.notes.append(f"skipped {len(other)} .jsonl file(s) that are not veRL file-logger logs")

    events = [] if path.is_file() else sorted(path.rglob("events.out.tfevents.*"))
    if events:
        try:
            tb_metrics, run.wall_times = read_tensorboard(events)
        except ImportError:
            run.notes.append(f"{len(events)} TensorBoard event file(s) skipped: the `tensorboard` package is missing")
        else:
            run.metrics = run.metrics.combine_first(tb_metrics)  # the file logger's values win on a shared point
            run.sources += events
    if run.metrics.empty:
        run.notes.append("no metrics found (no veRL file-logger .jsonl, no readable TensorBoard events)")

    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            run.summary = json.loads(summary.read_text())
        except ValueError as exc:
            run.notes.append(f"summary.json unreadable: {exc}")

    run.config_path = find_config(run_dir)
    if run.config_path is None:
        run.notes.append("no Hydra config (.hydra/config.yaml or config.yaml): settings unknown")
    else:
        run.config = _load_config(run.config_path, run.notes)
    return run


def _unique_names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str | None]:
    """User names, else directory names, prefixed with the parent folder where two would clash."""
    if names:
        if len(names) != len(paths):
            raise ValueError(f"--label was given {len(names)} times for {len(paths)} runs: give one per run or none")
        return list(names)
    base = [p.stem if p.is_file() else p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{b}" if base.count(b) > 1 else b for p, b in zip(paths, base, strict=True)]


def load_runs(paths: Sequence[str | Path], names: Sequence[str] | None = None, progress: bool = False) -> list[Run]:
    """Read several runs (with a rich progress bar when ``progress`` and more than one run)."""
    paths = [Path(p) for p in paths]
    labels = _unique_names(paths, names)
    items = list(zip(paths, labels, strict=True))
    if progress and len(items) > 1:
        from rich.progress import track

        items = track(items, description="reading runs", transient=True)
    return [load_run(path, name) for path, name in items]
