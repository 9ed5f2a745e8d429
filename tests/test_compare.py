"""``python -m verl_espo.compare``: the runs it starts, the shared model, the report it writes, its errors.

The trainer is replaced by a runner that writes what a smoke run writes (veRL's file-logger lines, the summary,
the Hydra config), so this checks the command's own logic in seconds; the smoke runs themselves are tested in
tests/test_e2e_learning.py and tests/test_e2e_hybrid.py, the report in tests/test_report.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verl_espo.compare import DEFAULT_ALGOS, compare, label, main
from verl_espo.smoke import SmokeResult

ACCURACY = {"espo": 0.75, "gspo": 0.5, "grpo": 0.625, "egspo": 0.5625}


class FakeRunner:
    """Writes a smoke run's files; records each call. ``fail`` names algorithms whose trainer 'crashes'."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.calls: list[dict] = []
        self.fail = fail

    def __call__(self, algo, steps, out_dir, overrides, *, model_dir, echo=True) -> SmokeResult:
        call = {"algo": algo, "steps": steps, "out": Path(out_dir), "overrides": overrides, "model": model_dir}
        self.calls.append(call)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        done = steps // 2 if algo in self.fail else steps
        lines = [{"step": 0, "data": {"val-core/toy/acc/mean@1": 0.1}}]
        for step in range(1, done + 1):
            data = {"critic/score/mean": 0.1 + 0.02 * step, "actor/entropy": 1.0 - 0.01 * step, "timing_s/step": 3.0}
            if step == done:
                data["val-core/toy/acc/mean@1"] = ACCURACY[algo]
            lines.append({"step": step, "data": data})
        (out / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        config = {
            "actor_rollout_ref": {"actor": {"policy_loss": {"loss_mode": algo}}},
            "data": {"seed": 0, "train_files": str(out / "data" / "train.parquet")},  # each run's own copy
        }
        (out / "hydra" / ".hydra").mkdir(parents=True, exist_ok=True)
        (out / "hydra" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        summary = {"algo": algo, "steps_completed": done, "wall_s": 60.0, "trainer_wall_s": 50.0}
        (out / "summary.json").write_text(json.dumps(summary))
        return SmokeResult(algo, str(out), 1 if algo in self.fail else 0, 60.0, [], summary)


def test_runs_every_algorithm_from_one_model_and_reports_them(tmp_path):
    runner = FakeRunner()
    result = compare(steps=6, out_dir=tmp_path, overrides=["trainer.test_freq=3"], runner=runner, echo=False)
    assert result.ok
    assert [c["algo"] for c in runner.calls] == list(DEFAULT_ALGOS) == ["espo", "gspo", "grpo", "egspo"]
    assert {c["model"] for c in runner.calls} == {tmp_path / "model"}  # one model for every run
    assert all(c["steps"] == 6 and c["overrides"] == ["trainer.test_freq=3"] for c in runner.calls)
    assert [c["out"] for c in runner.calls] == [tmp_path / "runs" / a for a in DEFAULT_ALGOS]

    report = (tmp_path / "report" / "report.md").read_text()
    assert report.startswith("# ESPO, GSPO, GRPO, EGSPO on the bundled default (6 steps)")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results) == {label(a) for a in DEFAULT_ALGOS}
    for algo, accuracy in ACCURACY.items():
        assert results[label(algo)]["val-core/toy/acc/mean@1"]["value"] == accuracy
    assert "**75.0**" in report  # ESPO's accuracy is the best, and bold
    loss_row = next(line for line in report.splitlines() if "`actor_rollout_ref.actor.policy_loss.loss_mode`" in line)
    assert [cell.strip() for cell in loss_row.split("|")[2:-1]] == ["espo", "gspo", "grpo", "egspo"]
    assert "| `data.train_files`" not in report  # each run's own copy of the same data: not a difference
    assert (tmp_path / "report" / "train_reward.png").stat().st_size > 5_000


def test_a_failed_run_does_not_stop_the_others_and_the_exit_code_says_so(tmp_path):
    runner = FakeRunner(fail=("gspo",))
    result = compare(steps=4, out_dir=tmp_path, runner=runner, echo=False)
    assert [c["algo"] for c in runner.calls] == list(DEFAULT_ALGOS)
    assert not result.ok and result.report_returncode == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "steps: 4, 2, 4, 4" in report.splitlines()[0]  # the title says the runs differ in length


def test_report_only_redraws_without_training(tmp_path, monkeypatch):
    compare(("espo", "grpo"), steps=3, out_dir=tmp_path, runner=FakeRunner(), echo=False)
    idle = FakeRunner()
    result = compare(("espo", "grpo"), out_dir=tmp_path, report_out=tmp_path / "again", report_only=True, runner=idle)
    assert idle.calls == [] and result.ok
    assert "ESPO, GRPO" in (tmp_path / "again" / "report.md").read_text()


def test_report_only_with_no_runs_writes_nothing(tmp_path):
    result = compare(("espo",), out_dir=tmp_path, report_only=True, runner=FakeRunner(), echo=False)
    assert result.report_returncode == 2 and not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    "algos, steps, match",
    [(("espo", "ppo"), 3, "--algos must name"), ((), 3, "--algos must name"), (("espo", "espo"), 3, "twice"),
     (("espo",), 0, "--steps must be >= 1")],
)  # fmt: skip
def test_bad_arguments_are_refused_before_any_run(tmp_path, algos, steps, match):
    runner = FakeRunner()
    with pytest.raises(ValueError, match=match):
        compare(algos, steps, tmp_path, runner=runner, echo=False)
    assert runner.calls == []


def test_cli_refuses_report_only_without_a_folder(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--report-only"])
    assert exit_info.value.code == 2
    assert "--report-only needs --out" in capsys.readouterr().err
