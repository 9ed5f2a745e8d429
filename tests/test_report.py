"""The report command on runs generated here: numbers, bold, figures, settings, time, missing metrics, TensorBoard."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from verl_espo.report import (
    Run,
    SmoothingConfig,
    load_run,
    load_runs,
    merge_by_step,
    metrics_frame,
    read_file_logger,
    smooth,
)
from verl_espo.report.__main__ import main
from verl_espo.report.figures import figure_files, plot_rows
from verl_espo.report.settings import DEFAULT_IGNORED, differing_settings
from verl_espo.report.table import results_table, to_markdown
from verl_espo.report.validation import benchmarks, parse_val_key

BENCHES = ("aime24", "HuggingFaceH4/MATH-500")  # a data_source with a slash, as veRL allows
VAL_STEPS = (0, 5, 10)


def all_train_keys() -> list[str]:
    """Every plotted metric key, read when a test runs (a test module may declare a loss with its own plots)."""
    return sorted({row.key for row in plot_rows()})


def _val_key(source: str, n: int = 4) -> str:
    return f"val-core/{source}/acc/mean@{n}"


def _accuracy(run: int, bench: int, step: int) -> float:
    """Distinct, irregular values: run 0 is best on aime24, run 1 on MATH-500 (checked by the bold test)."""
    base = [[0.30, 0.62], [0.21, 0.71]][run][bench]
    return round(base + 0.013 * step - 0.004 * (step == 10) * run, 6)


def _write_run(root: Path, name: str, run: int, train_keys: list[str], config: dict | None, config_at: str) -> Path:
    """A run folder as veRL's file logger writes it: validation and training of a step in separate lines."""
    out = root / name
    out.mkdir(parents=True)
    lines = []
    for step in range(0, 11):
        if step in VAL_STEPS:
            val = {_val_key(s): _accuracy(run, i, step) for i, s in enumerate(BENCHES)}
            val.update({f"val-aux/{s}/acc/std@4": 0.4 for s in BENCHES} | {"val-aux/num_turns/mean": 2.0})
            lines.append({"step": step, "data": val})
        if step > 0:
            data = {key: 0.1 * (run + 1) + 0.01 * step + 0.001 * j for j, key in enumerate(train_keys)}
            data["timing_s/step"] = 2.0 + run + 0.5 * step
            data["timing_s/testing"] = 1.5
            data["note/string"] = "not a number"
            data["actor/ppo_kl"] = None  # orjson writes NaN as null
            lines.append({"step": step, "data": data})
    (out / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (out / "rollouts.jsonl").write_text('{"input": "2+2", "output": "4"}\n')  # not a file-logger log
    if config is not None:
        path = out / config_at
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
    return out


def _config(loss_mode: str, lr: float) -> dict:
    return {
        "actor_rollout_ref": {
            "actor": {"policy_loss": {"loss_mode": loss_mode}, "optim": {"lr": lr}, "clip_ratio_low": 0.2},
            "rollout": {"n": 8, "val_kwargs": {"n": 4, "temperature": 1.0}},
            "model": {"path": "Qwen/Qwen3-1.7B-Base"},
        },
        "data": {"train_batch_size": 64, "max_response_length": "${oc.select:missing,512}"},
        "trainer": {"default_local_dir": f"/ckpt/{loss_mode}", "total_training_steps": 10},
    }


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    # espo logs every metric of the figure table; grpo lacks the ESPO/EGSPO/CHORD ones; bare has no config
    _write_run(root, "espo", 0, all_train_keys(), _config("espo", 1e-6), "hydra/.hydra/config.yaml")
    basic = ["critic/score/mean", "actor/entropy", "response_length/mean", "actor/pg_clipfrac"]
    _write_run(root, "grpo", 1, basic, _config("vanilla", 2e-6), "config.yaml")
    (root / "espo" / "summary.json").write_text(json.dumps({"wall_s": 125.0}))
    bare = root / "bare"
    bare.mkdir()
    (bare / "exp.jsonl").write_text(json.dumps({"step": 1, "data": {"critic/score/mean": 0.5}}) + "\n")
    return root


@pytest.fixture(scope="module")
def report_dir(runs_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    runs = [str(runs_root / name) for name in ("espo", "grpo", "bare")]
    assert main([*runs, "--out", str(out), "--smoothing", "0.5"]) == 0
    return out


# ----------------------------------------------------------------------------- the command's output
def _section(md: str, start: str, end: str) -> str:
    return md.split(start)[1].split(end)[0]


def _rows(section: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell: the cells, stripped."""
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return {cells[0]: cells for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in rows)}


def test_table_numbers_equal_the_inputs(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    for run, name in enumerate(("espo", "grpo")):
        for i, source in enumerate(BENCHES):
            assert results[name][_val_key(source)] == {"value": _accuracy(run, i, 10), "step": 10}
    assert results["bare"] == {}

    rows = _rows(_section((report_dir / "report.md").read_text(), "## Results", "## Setup"))
    assert rows["run"] == ["run", "HuggingFaceH4/MATH-500 (avg@4)", "aime24 (avg@4)", "average", "step"]
    for run, name in enumerate(("espo", "grpo")):
        math500, aime = 100 * _accuracy(run, 1, 10), 100 * _accuracy(run, 0, 10)
        cells = [c.strip("*") for c in rows[name]]
        assert cells == [name, f"{math500:.1f}", f"{aime:.1f}", f"{(math500 + aime) / 2:.1f}", "10"]
    assert rows["bare"] == ["bare", "–", "–", "–", "–"]


def test_bold_marks_the_best(report_dir):
    rows = _rows(_section((report_dir / "report.md").read_text(), "## Results", "## Setup"))
    # MATH-500: grpo 0.71+0.13-0.004 > espo 0.62+0.13; aime24: espo 0.30+0.13 > grpo 0.21+0.13-0.004;
    # average: espo (75.0 + 43.0) / 2 = 59.0 > grpo (83.6 + 33.6) / 2 = 58.6
    assert rows["espo"][1:4] == ["75.0", "**43.0**", "**59.0**"]
    assert rows["grpo"][1:4] == ["**83.6**", "33.6", "58.6"]
    assert rows["espo"][1] == f"{100 * _accuracy(0, 1, 10):.1f}"
    assert rows["grpo"][2] == f"{100 * _accuracy(1, 0, 10):.1f}"


def _run(name: str, steps: dict[int, dict[str, float]]) -> Run:
    return Run(name, Path("."), metrics_frame(steps.items()))


def test_best_and_ties():
    run_a = _run("a", {1: {_val_key("x"): 0.5}, 2: {_val_key("x"): 0.3}})
    run_b = _run("b", {1: {_val_key("x"): 0.3}, 2: {_val_key("x"): 0.50001}})
    last = results_table([run_a, run_b], benchmarks([run_a, run_b]), at="last")
    assert last["x (avg@4)"].tolist() == ["30.0", "**50.0**"]
    assert last["step"].tolist() == ["2", "2"]
    best = results_table([run_a, run_b], benchmarks([run_a, run_b]), at="best")
    assert "step" not in best.columns
    assert best["x (avg@4)"].tolist() == ["**50.0**", "**50.0**"]  # a tie in the printed digits
    single = results_table([run_a], benchmarks([run_a]))
    assert "**" not in to_markdown(single)  # nothing to compare with one run


def test_every_expected_png_is_a_valid_image(report_dir):
    from PIL import Image

    expected = {f"{name}.png" for name in figure_files()} | {"val_aime24.png", "val_HuggingFaceH4_MATH-500.png"}
    assert {p.name for p in report_dir.glob("*.png")} == expected
    md = (report_dir / "report.md").read_text()
    for name in sorted(expected):
        with Image.open(report_dir / name) as image:
            image.verify()
        with Image.open(report_dir / name) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 500 <= width <= 4000 and 400 <= height <= 1500, (name, image.size)
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
            assert pixels.std() > 5, f"{name} looks blank"
        assert f"]({name})" in md


def test_a_run_lacking_metrics_still_reports(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "`espo_clip_fraction.png`: nothing logged by grpo, bare" in md
    assert "`egspo_gate.png`: nothing logged by grpo, bare" in md
    assert f"`{_val_key('aime24')}` not logged by bare" in md
    assert "bare: skipped" not in md
    assert "grpo: skipped 1 .jsonl file(s) that are not veRL file-logger logs" in md
    assert "bare: no Hydra config" in md


def test_only_missing_figures_are_skipped(runs_root, tmp_path):
    from verl_espo.report import write_report

    report = write_report(load_runs([runs_root / "grpo"]), tmp_path)
    assert {p.stem for p in report.figures} == {
        "train_reward", "entropy", "response_length", "clip_fraction", "step_time", "val_aime24",
        "val_HuggingFaceH4_MATH-500",
    }  # fmt: skip
    assert not [n for n in report.notes if "not drawn" in n]  # the plots of losses grpo did not run are not noted


def test_a_loss_run_without_its_metrics_notes_the_loss_figures(runs_root, tmp_path):
    """A run whose config names a loss but which logged none of the loss's metrics: that loss's figures are noted,
    no other loss's."""
    from verl_espo.report import write_report

    basic = ["critic/score/mean", "actor/entropy", "response_length/mean", "actor/pg_clipfrac"]
    _write_run(tmp_path / "runs", "espo", 0, basic, _config("espo", 1e-6), "config.yaml")
    notes = write_report(load_runs([tmp_path / "runs" / "espo"]), tmp_path / "out").notes
    assert any(n.startswith("`espo_eps.png` not drawn: no run logged actor/espo/high/eps_mean") for n in notes)
    assert {n.split("`")[1] for n in notes if "not drawn" in n} == {"espo_clip_fraction.png", "espo_eps.png"}


def test_settings_and_time(report_dir, runs_root):
    md = (report_dir / "report.md").read_text()
    section = _section(md, "### Settings that differ", "## Training time")
    rows = _rows(section)
    assert rows["`actor_rollout_ref.actor.policy_loss.loss_mode`"][1:] == ["espo", "vanilla"]
    assert rows["`actor_rollout_ref.actor.optim.lr`"][1:] == ["1e-06", "2e-06"]
    assert "`trainer.default_local_dir`" not in rows  # ignored by default
    assert "max_response_length" not in section  # the same after resolving ${oc.select:missing,512}
    runs = load_runs([runs_root / "espo", runs_root / "grpo"])
    loss_mode, lr = "actor_rollout_ref.actor.policy_loss.loss_mode", "actor_rollout_ref.actor.optim.lr"
    assert set(differing_settings(runs).index) == {loss_mode, lr}
    assert set(differing_settings(runs, (*DEFAULT_IGNORED, "*.lr")).index) == {loss_mode}
    setup = _rows(_section(md, "## Setup", "###"))
    expected = ["espo", "Qwen/Qwen3-1.7B-Base", "espo", "-", "64", "8", "-", "1e-06", "0.2 / -", "512", "-", "4 / 1.0"]
    assert setup["espo"] == [*expected, "10"]
    # training time: sum of timing_s/step over steps 1..10 = 10 * (2 + run) + 0.5 * 55; validation 10 * 1.5
    timing = _rows(_section(md, "## Training time", "`time / step`"))
    assert timing["espo"] == ["espo", "10", "4.8 s", "47.5 s", "15.0 s", "2 min 05 s (summary.json)", "–"]
    assert timing["grpo"] == ["grpo", "10", "5.8 s", "57.5 s", "15.0 s", "–", "–"]


# ----------------------------------------------------------------------------- reading
def test_read_file_logger_follows_a_growing_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1, "data": {"a": 1}}\n{"step": 2, "da')
    records, offset = read_file_logger(path)
    assert records == [{"step": 1, "data": {"a": 1}}]
    with open(path, "ab") as f:
        f.write(b'ta": {"a": 2}}\n')
    more, _ = read_file_logger(path, offset)
    assert more == [{"step": 2, "data": {"a": 2}}]
    assert merge_by_step([{"step": 2, "data": {"a": 1, "b": None}}, {"step": 2, "data": {"a": 3, "c": "x"}}]) == {
        2: {"a": 3.0}
    }


def test_load_run_merges_steps_and_reads_the_nested_hydra_config(runs_root):
    run = load_run(runs_root / "espo")
    assert run.name == "espo" and run.config_path.parts[-3:] == ("hydra", ".hydra", "config.yaml")
    assert run.config["data"]["max_response_length"] == 512
    assert run.metrics.index.tolist() == list(range(11))
    assert run.metrics.loc[10, _val_key("aime24")] == _accuracy(0, 0, 10)
    assert run.metrics.loc[10, "critic/score/mean"] == 0.1 + 0.01 * 10 + 0.001 * all_train_keys().index(
        "critic/score/mean"
    )
    assert "actor/ppo_kl" not in run.keys() and "note/string" not in run.keys()
    series = run.series("timing_s/step")
    assert series.index.tolist() == list(range(1, 11)) and series.tolist() == [2.0 + 0.5 * s for s in range(1, 11)]
    single = load_run(runs_root / "espo" / "metrics.jsonl")  # a .jsonl path works as well
    assert single.metrics.equals(run.metrics)


def test_missing_things_are_notes_not_errors(tmp_path):
    (tmp_path / "metrics.jsonl").touch()  # a run that stopped before its first step
    empty = load_run(tmp_path)
    assert empty.metrics.empty and any("no metrics found" in n for n in empty.notes)
    assert empty.sources == [tmp_path / "metrics.jsonl"] and not any("not veRL" in n for n in empty.notes)
    gone = load_run(tmp_path / "nope")
    assert any("does not exist" in n for n in gone.notes)
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No validation metrics" in md and "not drawn" in md


def test_val_key_parsing():
    parsed = parse_val_key("val-core/HuggingFaceH4/MATH-500/acc/best@32/mean")
    assert (parsed.source, parsed.var, parsed.stat, parsed.n) == ("HuggingFaceH4/MATH-500", "acc", "best@32/mean", 32)
    parsed = parse_val_key("val-aux/aime24/score/mean@16")
    assert (parsed.section, parsed.source, parsed.var, parsed.n) == ("val-aux", "aime24", "score", 16)
    assert parse_val_key("val-aux/num_turns/mean") is None


def test_benchmark_choice():
    run = _run("r", {0: {"val-core/a/reward/mean@1": 0.1, "val-core/b/acc/mean@8": 0.2,
                         "val-core/b/acc/mean@4": 0.3, "val-core/b/acc/best@8/mean": 0.9}})  # fmt: skip
    assert [(b.source, b.var, b.n) for b in benchmarks([run])] == [("a", "reward", 1), ("b", "acc", 8)]


@pytest.mark.parametrize(
    ("config", "values", "expected"),
    [
        # TensorBoard's debiased EMA, w = 0.5: last = 0.5, 1.75, 1.875 -> / (1 - 0.5^i) = 1, 2.333.., 2.142..
        (SmoothingConfig("ema", 0.5), [1.0, 3.0, 2.0], [1.0, 1.75 / 0.75, 1.875 / 0.875]),
        (SmoothingConfig("ema", 0.0), [1.0, 3.0, 2.0], [1.0, 3.0, 2.0]),
        (SmoothingConfig("rolling", window=2), [1.0, 3.0, 2.0], [1.0, 2.0, 2.5]),
        (SmoothingConfig("none"), [1.0, 3.0], [1.0, 3.0]),
        (SmoothingConfig("ema", 0.5), [2.0, math.nan, 4.0], [2.0, math.nan, 2.5 / 0.75]),
        (SmoothingConfig("ema", 0.5), [2.0, math.inf, 4.0], [2.0, math.inf, 2.5 / 0.75]),
        (SmoothingConfig("rolling", window=3), [1.0, math.nan, 3.0, 5.0], [1.0, math.nan, 2.0, 4.0]),
    ],
)
def test_smoothing(config, values, expected):
    np.testing.assert_allclose(smooth(np.array(values), config), expected, equal_nan=True)


def test_bad_options_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--smoothing"):
        SmoothingConfig("ema", 1.0)
    assert main([str(tmp_path), "--out", str(tmp_path / "o"), "--smoothing", "1.5"]) == 2
    assert main([str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o"), "--label", "one"]) == 2


# ----------------------------------------------------------------------------- TensorBoard
def test_tensorboard_events(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter  # what veRL's TensorBoard logger uses

    run_dir = tmp_path / "tb_run"
    writer = SummaryWriter(str(run_dir / "tensorboard_log" / "proj" / "exp"))
    for step in range(1, 4):
        writer.add_scalar("critic/score/mean", 0.25 * step, step)
        writer.add_scalar(_val_key("aime24"), 0.125 * step, step)
    writer.close()
    run = load_run(run_dir)
    series = run.series("critic/score/mean")
    assert series.index.tolist() == [1, 2, 3] and series.tolist() == [0.25, 0.5, 0.75]
    assert run.series(_val_key("aime24")).tolist() == [0.125, 0.25, 0.375]
    assert run.wall_times.index.tolist() == [1, 2, 3]

    # without the tensorboard package: a note, not an error
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_file_loader", None)
    run = load_run(run_dir)
    assert run.metrics.empty and any("`tensorboard` package is missing" in n for n in run.notes)


# ----------------------------------------------------------------------------- what the report names
def test_paths_are_shown_relative_to_the_working_directory(tmp_path, monkeypatch):
    from verl_espo.report.settings import shown_path

    work = tmp_path / "work"
    model = work / "outputs" / "model"
    run_dir = _write_run(work / "outputs", "espo", 0, ["critic/score/mean"], _config("espo", 1e-6), "config.yaml")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["actor_rollout_ref"]["model"]["path"] = str(model)  # absolute, as the runners write it
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(work)
    assert main([str(run_dir), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert str(tmp_path) not in md  # no machine path: relative inside the working directory
    assert "- **espo**: `outputs/espo` (" in md and "`outputs/espo/metrics.jsonl`" in md
    assert _rows(_section(md, "## Setup", "## Training time"))["espo"][1] == "outputs/model"
    assert "Generated by `python -m verl_espo.report` from 1 run(s):" in md  # no timestamp
    assert shown_path(tmp_path / "elsewhere" / "Qwen3-1.7B") == "Qwen3-1.7B"  # outside it: the name
    assert shown_path("Qwen/Qwen3-1.7B-Base") == "Qwen/Qwen3-1.7B-Base"  # a hub id stays as written
