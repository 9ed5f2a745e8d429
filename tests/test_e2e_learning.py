"""End-to-end learning: the README's main job (``python -m verl_espo.smoke espo``, 40 steps of veRL's real trainer
with ESPO on the bundled default) raises the training reward and the greedy validation accuracy.

This is the suite's one long run. When README command 1 ran the main job in this checkout after the last change
to the package (as CI does), its output is checked instead of training the same 40 steps again.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

VAL_KEY = "val-core/toy_arithmetic/acc/mean@1"


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _main_job_output(steps: int):
    """The README's main job (``python -m verl_espo.smoke espo``, run from the repository root as README command 1
    and CI run it) if it ran with no override after the last change to the package: the same run this test would
    make, so its result is checked instead of training the same 40 steps a second time. Otherwise None."""
    from verl_espo.launch import merged_steps
    from verl_espo.report.runs import read_file_logger

    root = Path(__file__).resolve().parents[1]
    sources = [p for pattern in ("*.py", "*.yaml") for p in (root / "verl_espo").rglob(pattern)]
    newest_code = max(p.stat().st_mtime for p in sources)  # sources only: imports write __pycache__ later
    for out in sorted((root / "outputs" / "smoke").glob("espo-*"), reverse=True):
        summary, command = out / "summary.json", out / "command.txt"
        if not (summary.is_file() and command.is_file()) or summary.stat().st_mtime < newest_code:
            continue
        args = command.read_text().split()
        overrides = [a for a in args[args.index("--config-name=espo_smoke") + 1 :] if not a.startswith(
            ("actor_rollout_ref.model.path=", "data.train_files=", "data.val_files=", "trainer.logger=",
             "trainer.default_local_dir=", "hydra.run.dir="))]  # fmt: skip
        records = merged_steps(read_file_logger(out / "metrics.jsonl")[0])
        done = json.loads(summary.read_text())
        if overrides == [f"trainer.total_training_steps={steps}"] and done.get("returncode") == 0:
            return types.SimpleNamespace(ok=True, out_dir=str(out), steps=records, summary=done)
    return None


@pytest.mark.slow
@pytest.mark.timeout(1800)  # run_smoke's own limit (1,500 s) decides; the suite's default 900 s is too short
def test_espo_raises_the_reward_on_the_bundled_default(tmp_path):
    """The README's main job (40 steps of the bundled default) learns: reward and validation accuracy rise."""
    from verl_espo.smoke import run_smoke

    result = _main_job_output(40) or run_smoke("espo", 40, tmp_path / "espo40", echo=False, timeout_s=1500)
    assert result.ok, Path(result.out_dir, "train.log").read_text()[-5000:]
    rewards = [s["critic/score/mean"] for s in _train_steps(result)]
    assert len(rewards) == 40
    assert _mean(rewards[-5:]) >= _mean(rewards[:5]) + 0.2, rewards
    validated = [s[VAL_KEY] for s in result.steps if VAL_KEY in s]
    assert validated[-1] >= validated[0] + 0.2, validated
