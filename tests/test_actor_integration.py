"""ESPO, EGSPO and CHORD through veRL's real FSDP2 actor worker on CPU (gloo), at one and two data-parallel ranks.

Every case runs in ``tests/integration/actor_step.py`` under one ``torchrun`` per world size: for each case the
plugin's Hydra config is instantiated, ``ActorRolloutRefWorker`` builds the FSDP2 engine, the loss is installed with
``set_loss_fn`` as the ``plugin_sync`` trainer installs it, ``compute_log_prob`` yields the old log-probs
and entropy, and ``update_actor`` trains on the ESPO loss.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "integration" / "actor_step.py"


# Every case runs in the same two torchrun launches (one per world size): each launch builds one worker per case.
CASES = {
    "espo": {},
    "espo_batch_rmpad": {
        "overrides": [
            "actor_rollout_ref.actor.policy_loss.espo.grouping=batch",
            "actor_rollout_ref.model.use_remove_padding=true",
        ]
    },
    # Expert rows 1, 2, 3 of 8: at dp=2 rank 0 holds all three (micro-batches of 2: one with one expert row, one
    # with two) and rank 1 none; at dp=1 they are spread over micro-batches with and without expert rows.
    "egspo": {"config_name": "egspo_trainer", "experts": [1, 2, 3], "mu": 0.3},
    "chord": {"config_name": "chord_trainer", "experts": [1, 2, 3], "mu": 0.3},
    # mu = 1: the update is the SFT-phi term alone
    "sft_only": {"config_name": "egspo_trainer", "experts": [1, 2, 3], "mu": 1.0},
}


def run_actor_steps(model: str, tmp_path: Path, nproc: int, port: int) -> dict:
    cases, out = tmp_path / "cases.json", tmp_path / f"reports_{nproc}.json"
    cases.write_text(json.dumps(CASES))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
        str(SCRIPT), "--model", model, "--out", str(out), "--cases", str(cases),
    ]  # fmt: skip
    env = {**os.environ, "VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, dict]:
    """{world size: {case: rank 0's report}} for dp=1 and dp=2."""
    from verl_espo.toy.assets import build_assets

    model = str(build_assets(tmp_path_factory.mktemp("tiny_model")))
    return {n: run_actor_steps(model, tmp_path_factory.mktemp(f"dp{n}"), n, 29600 + n) for n in (1, 2)}


ESPO_METRICS = [
    f"actor/espo/{group}/{name}"
    for group in ("high", "low")
    for name in (
        "token_frac",
        "group_size_mean",
        "clipfrac_upper",
        "clipfrac_lower",
        "eps_mean",
        "entropy_mean",
        "log_ratio_abs_mean",
        "log_ratio_abs_max",
    )
] + [
    "actor/espo/num_groups_mean",
    "actor/espo/grad_utilization",
    "actor/espo/old_entropy",
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "actor/pg_loss",
]


def check_report(report: dict) -> None:
    metrics = report["metrics"]
    missing = [k for k in ESPO_METRICS if k not in metrics]
    assert not missing, missing
    assert report["finite"], metrics
    assert metrics["grad_norm"] > 0
    assert report["max_log_prob_change"] > 0, "parameters did not change"
    # The loss saw the same old entropy the trainer computes (`actor/entropy`: token-mean of the batch).
    assert metrics["actor/espo/old_entropy"] == pytest.approx(report["trainer_entropy"], rel=1e-6)


def test_espo_actor_step_is_invariant_to_data_parallel_size(reports):
    one, two = reports[1]["espo"], reports[2]["espo"]
    check_report(one)
    check_report(two)
    assert two["world_size"] == 2
    assert two["metrics"]["actor/pg_loss"] == pytest.approx(one["metrics"]["actor/pg_loss"], rel=1e-5, abs=1e-7)
    assert two["metrics"]["grad_norm"] == pytest.approx(one["metrics"]["grad_norm"], rel=1e-4)


def test_espo_batch_grouping_with_remove_padding(reports):
    one, two = reports[1]["espo_batch_rmpad"], reports[2]["espo_batch_rmpad"]
    check_report(one)
    assert "actor/espo/entropy_threshold" in one["metrics"]
    assert math.isfinite(one["metrics"]["actor/espo/entropy_threshold"])
    assert two["metrics"]["actor/pg_loss"] == pytest.approx(one["metrics"]["actor/pg_loss"], rel=1e-5, abs=1e-7)


HYBRID_METRICS = [
    "actor/hybrid/mu",
    "actor/hybrid/rl_loss",
    "actor/hybrid/sft_loss",
    "actor/hybrid/sft_weight_mean",
    "actor/hybrid/expert_nll",
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "actor/pg_loss",
]
EGSPO_METRICS = [
    "actor/egspo/high_token_frac",
    "actor/egspo/weight_mean",
    "actor/egspo/phi_mean_low",
    "actor/egspo/low_neg_adv_frac",
    "actor/egspo/entropy_threshold",
    "actor/egspo/old_entropy",
]


@pytest.mark.parametrize("algo", ["egspo", "chord"])
def test_hybrid_actor_step_mixes_expert_rows_and_is_invariant_to_data_parallel_size(reports, algo):
    one, two = reports[1][algo], reports[2][algo]
    expected = HYBRID_METRICS + (EGSPO_METRICS if algo == "egspo" else [])
    for report in (one, two):
        metrics = report["metrics"]
        assert not [k for k in expected if k not in metrics], sorted(metrics)
        assert report["finite"] and metrics["grad_norm"] > 0 and report["max_log_prob_change"] > 0
        assert metrics["actor/hybrid/mu"] == pytest.approx(0.3)
        # The loss is the CHORD mix of its two parts, each normalised over the whole batch.
        mixed = 0.7 * metrics["actor/hybrid/rl_loss"] + 0.3 * metrics["actor/hybrid/sft_loss"]
        assert metrics["actor/pg_loss"] == pytest.approx(mixed, rel=1e-6, abs=1e-9)
        assert metrics["actor/hybrid/sft_loss"] > 0  # -phi * log p > 0 on expert tokens
    assert two["world_size"] == 2
    for key in ("actor/pg_loss", "actor/hybrid/rl_loss", "actor/hybrid/sft_loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-5, abs=1e-8), key
    assert two["metrics"]["grad_norm"] == pytest.approx(one["metrics"]["grad_norm"], rel=1e-4)
    if algo == "egspo":
        assert one["metrics"]["actor/egspo/entropy_threshold"] == two["metrics"]["actor/egspo/entropy_threshold"]
        assert 0.0 < one["metrics"]["actor/egspo/high_token_frac"] < 1.0


def test_the_sft_part_of_the_hybrid_loss_makes_the_demonstrations_more_likely(reports):
    """mu = 1 leaves the SFT-phi term alone: one update through veRL's actor raises the log-probability of the
    demonstrations' tokens (their mean change is positive), identically at one and two ranks."""
    one, two = reports[1]["sft_only"], reports[2]["sft_only"]
    assert one["metrics"]["actor/pg_loss"] == pytest.approx(one["metrics"]["actor/hybrid/sft_loss"], rel=1e-6)
    assert one["expert_log_prob_change"] > 0
    assert two["expert_log_prob_change"] == pytest.approx(one["expert_log_prob_change"], rel=1e-3)
