"""End-to-end learning: the README's main job (``python -m verl_espo.smoke espo``, 40 steps of veRL's real trainer
with ESPO and the plugin's ``hf`` rollout on the bundled default) raises the training reward and the greedy
validation accuracy, and the rollout follows every update.

This is the suite's one long run. When README command 1 ran the main job in this checkout after the last change
to the package (as CI does), its output is checked instead of training the same 40 steps again.
"""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path

import pytest

VAL_KEY = "val-core/toy_arithmetic/acc/mean@1"
STEPS = 40
# Max |p_rollout - p_actor| over response tokens: fp32 on both sides, same weights -> ~1e-6.
SYNC_TOLERANCE = 1e-4


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _main_job_output(steps: int):
    """The README's main job (``python -m verl_espo.smoke espo``, run from the repository root as README command 1
    and CI run it) if it ran with no override after the last change to the package: the same run this test would
    make, so its result is checked instead of training the same 40 steps a second time. Otherwise None."""
    from verl_espo.runner import read_steps

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
        records = read_steps(out / "metrics.jsonl")
        done = json.loads(summary.read_text())
        if overrides == [f"trainer.total_training_steps={steps}"] and done.get("returncode") == 0:
            return types.SimpleNamespace(ok=True, out_dir=str(out), steps=records, summary=done)
    return None


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    from verl_espo.smoke import run_smoke

    result = _main_job_output(STEPS) or run_smoke(
        "espo", STEPS, tmp_path_factory.mktemp("espo40"), echo=False, timeout_s=1500
    )
    assert result.ok, Path(result.out_dir, "train.log").read_text()[-5000:]
    return result


@pytest.mark.slow
@pytest.mark.timeout(1800)  # run_smoke's own limit (1,500 s) decides; the suite's default 900 s is too short
def test_espo_raises_the_reward_on_the_bundled_default(main_job):
    """The README's main job (40 steps of the bundled default) learns: reward and validation accuracy rise."""
    rewards = [s["critic/score/mean"] for s in _train_steps(main_job)]
    assert len(rewards) == STEPS
    assert _mean(rewards[-5:]) >= _mean(rewards[:5]) + 0.2, rewards
    validated = [s[VAL_KEY] for s in main_job.steps if VAL_KEY in s]
    assert validated[-1] >= validated[0] + 0.2, validated


@pytest.mark.slow
def test_the_hf_rollout_follows_every_update(main_job):
    """The hf server's log-probs equal the actor's old log-probs at every step: it generated with the weights of
    the latest update (dummy-initialised at start, so the first sync is checked too); one sync per step."""
    for step in _train_steps(main_job):
        assert step["training/rollout_probs_diff_max"] < SYNC_TOLERANCE, step["step"]
        assert step["actor/grad_norm"] > 0
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert "actor/espo/old_entropy" in espo and all(math.isfinite(v) for v in espo.values()), espo
    log = Path(main_job.out_dir, "train.log").read_text(errors="replace")
    synced = re.findall(r"hf rollout: synced (\d+) tensors to replica 0 \(step (\d+)\)", log)
    assert [int(s) for _, s in synced] == list(range(0, STEPS + 1))  # initial sync + one after every step
    assert len({n for n, _ in synced}) == 1


@pytest.mark.slow
def test_the_first_run_check_passes_on_the_main_job(main_job):
    """``verl_espo.first_run_check`` with its toy bounds on the same 40 steps: no second trainer run."""
    from verl_espo.first_run_check import PROFILES, check_steps, format_checks

    checks = check_steps(main_job.steps, PROFILES["toy"])
    assert all(c.ok for c in checks), format_checks(checks)
