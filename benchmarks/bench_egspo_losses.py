"""Time the ``egspo`` and ``chord`` losses against veRL's ``vanilla`` (and ``vanilla`` + SFT), in the same run.

Forward + backward on the same padded batch (default 256 rows x 8192 tokens, response lengths uniform in
[1024, 8192]), on CUDA if available, else CPU, round-robin over all cases so that machine noise hits them
alike (harness: ``loss_timing.py``). Two groups:

* pure RL (every row a rollout): veRL's ``vanilla``; ``egspo`` with ``gate=batch`` (the step threshold is
  handed in, as the plugin's trainer does once per step) and with ``gate=sequence`` (per-row ``topk`` inside
  the loss); ``chord`` without expert rows (PPO through the plugin's code path, no gate). Target: EGSPO within
  1.3x of ``vanilla``.
* hybrid (``--expert-frac`` of the rows are expert demonstrations, ``mu``): ``vanilla`` on the rollout rows plus
  a plain SFT loss on the expert rows (veRL's ``sft_loss``: ``-masked_sum(log_prob) / expert tokens``), mixed
  ``(1 - mu) RL + mu SFT`` in one autograd graph; ``egspo`` (gate=batch) and ``chord`` (CHORD-phi: SFT-phi)
  with ``expert_mask``, ``mu`` and the step's ``hybrid_counts``. Target: within 1.3x of ``vanilla`` + SFT.

Every config carries the worker's ``global_batch_info`` (``dp_size``, ``batch_num_tokens``,
``global_batch_size``), as in veRL's actor, so no loss counts its mask to normalise. "Saved for backward" is
what autograd keeps between the passes, in units of one float32 (B, T) tensor: summed over saved tensors (the
figure of ``bench_losses.py``) and over distinct storages (what is really kept alive, batch inputs included).

    python benchmarks/bench_egspo_losses.py                        # 256 x 8192, float32
    python benchmarks/bench_egspo_losses.py --dtype bfloat16
    python benchmarks/bench_egspo_losses.py --rows 64 --tokens 2048 --repeats 5
    python benchmarks/bench_egspo_losses.py --profile egspo_seq    # torch.profiler table of one case
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from loss_timing import LossCase, cuda_peak_extra, device_label, make_batch, profile_case, round_robin

TARGET = 1.3
#: (case, baseline) pairs whose ratio is reported; the first four are checked against TARGET.
RATIOS = (
    ("egspo_batch", "vanilla"),
    ("egspo_seq", "vanilla"),
    ("hybrid_egspo", "vanilla+sft"),
    ("hybrid_chord", "vanilla+sft"),
    ("chord", "vanilla"),
    ("hybrid_egspo", "hybrid_chord"),
)
CHECKED = 4


def actor_config(loss_mode: str, gate: str, batch_info: dict[str, int]):
    """The EGSPO recipe's actor settings (``egspo_algo.yaml``: clip 0.2/0.2, dual clip 3, token-mean)."""
    from verl.workers.config import FSDPActorConfig

    from verl_espo.config import EGSPOConfig, HybridConfig, PluginPolicyLossConfig

    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode="token-mean",
        clip_ratio_low=0.2,
        clip_ratio_high=0.2,
        clip_ratio_c=3.0,
        global_batch_info=dict(batch_info),
        policy_loss=PluginPolicyLossConfig(
            loss_mode=loss_mode, egspo=EGSPOConfig(gate=gate, high_entropy_ratio=0.2), hybrid=HybridConfig()
        ),
    )


def build_cases(batch: dict, expert_frac: float, mu: float, rho: float, seed: int = 0) -> dict[str, LossCase]:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.utils.torch_functional import masked_sum

    from verl_espo.core.entropy import batch_entropy_threshold

    mask = batch["response_mask"]
    rows = mask.shape[0]
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    expert = torch.zeros(rows, dtype=torch.bool)
    expert[torch.randperm(rows, generator=g)[: round(expert_frac * rows)]] = True
    expert = expert.to(mask.device)
    rollout_mask = mask & ~expert[:, None]
    expert_tokens = mask & expert[:, None]
    lengths = mask.sum(-1)
    counts = {
        "rollout_tokens": int(lengths[~expert].sum()),
        "rollout_rows": int((~expert).sum()),
        "expert_tokens": int(lengths[expert].sum()),
        "expert_rows": int(expert.sum()),
    }
    full_info = {"dp_size": 1, "batch_num_tokens": int(lengths.sum()), "global_batch_size": rows}
    rl_info = {"dp_size": 1, "batch_num_tokens": counts["rollout_tokens"], "global_batch_size": counts["rollout_rows"]}
    # The trainer computes the step threshold once per step, outside the loss (not timed here).
    threshold_all = batch_entropy_threshold(batch["old_entropy"], mask, rho)
    threshold_rollout = batch_entropy_threshold(batch["old_entropy"], rollout_mask, rho)
    vanilla, egspo, chord = (get_policy_loss_fn(n) for n in ("vanilla", "egspo", "chord"))
    common = {"old_log_prob": batch["old_log_prob"], "advantages": batch["advantages"], "loss_agg_mode": "token-mean"}

    def registered(fn, config, response_mask: torch.Tensor, **extra: Any) -> LossCase:
        return lambda lp: fn(log_prob=lp, response_mask=response_mask, config=config, **common, **extra)[0]

    vanilla_rl = actor_config("vanilla", "batch", rl_info)

    def vanilla_plus_sft(lp: torch.Tensor) -> torch.Tensor:
        rl, _ = vanilla(log_prob=lp, response_mask=rollout_mask, config=vanilla_rl, **common)
        sft = -masked_sum(lp, expert_tokens) / counts["expert_tokens"]  # veRL's sft_loss (padded), dp_size 1
        return (1.0 - mu) * rl + mu * sft

    hybrid = {"expert_mask": expert, "mu": mu, "hybrid_counts": counts}
    entropy = batch["old_entropy"]
    return {
        "vanilla": registered(vanilla, actor_config("vanilla", "batch", full_info), mask),
        "egspo_batch": registered(
            egspo, actor_config("egspo", "batch", full_info), mask, old_entropy=entropy, entropy_threshold=threshold_all
        ),
        "egspo_seq": registered(egspo, actor_config("egspo", "sequence", full_info), mask, old_entropy=entropy),
        "chord": registered(chord, actor_config("chord", "batch", full_info), mask),
        "vanilla+sft": vanilla_plus_sft,
        "hybrid_egspo": registered(
            egspo,
            actor_config("egspo", "batch", full_info),
            mask,
            old_entropy=entropy,
            entropy_threshold=threshold_rollout,
            **hybrid,
        ),
        "hybrid_chord": registered(chord, actor_config("chord", "batch", full_info), mask, **hybrid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--expert-frac", type=float, default=0.2, help="share of expert rows in the hybrid cases")
    parser.add_argument("--mu", type=float, default=0.1, help="SFT weight of the hybrid cases (CHORD-phi: 0.1)")
    parser.add_argument("--rho", type=float, default=0.2, help="high-entropy share of the batch gate's threshold")
    parser.add_argument("--profile", nargs="*", default=[], help="print a torch.profiler table for these cases")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU); default: torch's choice")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import verl  # noqa: F401  (registers the plugin's losses through its entry point)

    import verl_espo.losses  # noqa: F401  (the same, where entry points are off: VERL_USE_EXTERNAL_PLUGINS=none)

    device = torch.device(args.device)
    batch = make_batch(args.rows, args.tokens, device, getattr(torch, args.dtype))
    cases = build_cases(batch, args.expert_frac, args.mu, args.rho)
    unknown = sorted(set(args.profile) - set(cases))
    if unknown:
        raise SystemExit(f"--profile: unknown case(s) {unknown}; cases: {list(cases)}")
    unit = args.rows * args.tokens * 4  # one fp32 (B, T) tensor
    timed = round_robin(cases, batch["log_prob"], device, args.repeats, args.warmup)
    results = {
        name: {k: t[k] for k in ("median_ms", "min_ms", "max_ms", "cpu_median_ms")}
        | {"saved_for_backward_BT": t["saved_bytes"] / unit, "saved_distinct_BT": t["distinct_bytes"] / unit}
        for name, t in timed.items()
    }
    if device.type == "cuda":
        for name, case in cases.items():
            results[name]["cuda_peak_extra_BT"] = cuda_peak_extra(case, batch["log_prob"], device) / unit
    ratios = {
        f"{a}/{b}": {
            stat: results[a][f"{stat}_ms"] / results[b][f"{stat}_ms"]
            for stat in ("median", "min") + (("cpu_median",) if device.type == "cpu" else ())
        }
        for a, b in RATIOS
    }
    summary = {
        "device": device_label(device),
        "shape": [args.rows, args.tokens],
        "dtype": args.dtype,
        "repeats": args.repeats,
        "expert_frac": args.expert_frac,
        "mu": args.mu,
        "results": results,
        "ratios": ratios,
        "timed_runs_ms": {name: t["times_ms"] for name, t in timed.items()},
    }

    print(f"device {summary['device']}, batch {args.rows} x {args.tokens}, {args.dtype}, forward+backward;")
    print(f"{args.repeats} round-robin repeats; hybrid cases: {args.expert_frac:.0%} expert rows, mu={args.mu}")
    cpu = device.type == "cpu"
    cpu_head = "CPU ms" if cpu else ""
    print(f"  {'case':13s} {'median ms':>10s} {'(min-max)':>17s} {cpu_head:>8s}   saved for backward (B,T)")
    for name, r in results.items():
        peak = f", CUDA peak +{r['cuda_peak_extra_BT']:.1f}" if "cuda_peak_extra_BT" in r else ""
        span = f"({r['min_ms']:.1f}-{r['max_ms']:.1f})"
        cpu_ms = f"{r['cpu_median_ms']:8.1f}" if cpu else " " * 8
        print(
            f"  {name:13s} {r['median_ms']:10.2f} {span:>17s} {cpu_ms}   "
            f"{r['saved_for_backward_BT']:.2f} (distinct storages {r['saved_distinct_BT']:.2f}){peak}"
        )
    stats = "median wall, min wall" + (", CPU time" if cpu else "")
    print(f"ratios (target <= {TARGET}x for the first {CHECKED}): {stats}")
    for i, (key, value) in enumerate(ratios.items()):
        verdict = ("  ok" if value["median"] <= TARGET else f"  ABOVE {TARGET}x") if i < CHECKED else ""
        print(f"  {key:28s} " + "  ".join(f"{v:.2f}x" for v in value.values()) + verdict)
    for name in args.profile:
        print(f"\n--- profile: {name} ---")
        print(profile_case(cases[name], batch["log_prob"], device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
