"""Time ESPO against veRL's own ``gspo`` and ``vanilla`` policy losses, measured in the same run.

Forward + backward of each registered loss on the same padded batch (default 256 rows x 8192 tokens,
responses of random length), on CUDA if available, else CPU. Reports the median time, the ratio to
veRL's ``gspo`` and ``vanilla``, and the memory the loss keeps for backward (in units of one fp32
(B, T) tensor) plus the CUDA peak when on GPU.

    python benchmarks/bench_losses.py                       # 256 x 8192
    python benchmarks/bench_losses.py --rows 64 --tokens 2048 --repeats 5
    python benchmarks/bench_losses.py --grouping token      # ESPO's token grouping ("w/o entropy grouping")
"""

from __future__ import annotations

import argparse
import json

import torch
from loss_timing import cuda_peak_extra, device_label, make_batch, round_robin


def actor_config(loss_mode: str, loss_agg_mode: str, vocab_size: int, grouping: str = "sequence"):
    from verl.workers.config import FSDPActorConfig

    from verl_espo.config import ESPOConfig, PluginPolicyLossConfig

    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        clip_ratio_low=3e-4 if loss_mode == "gspo" else 0.2,
        clip_ratio_high=4e-4 if loss_mode == "gspo" else 0.28,
        policy_loss=PluginPolicyLossConfig(
            loss_mode=loss_mode, espo=ESPOConfig(vocab_size=vocab_size, grouping=grouping)
        ),
    )


def registered_case(fn, batch: dict, config, extra: dict):
    """A registered veRL policy loss on ``batch`` as a ``log_prob -> loss`` case."""

    def case(log_prob: torch.Tensor) -> torch.Tensor:
        loss, _ = fn(
            old_log_prob=batch["old_log_prob"],
            log_prob=log_prob,
            advantages=batch["advantages"],
            response_mask=batch["response_mask"],
            loss_agg_mode=config.loss_agg_mode,
            config=config,
            **extra,
        )
        return loss

    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--grouping", choices=["sequence", "token"], default="sequence", help="espo.grouping of the ESPO loss timed"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    import verl  # noqa: F401  (registers the plugin's losses through its entry point)
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    import verl_espo.losses  # noqa: F401  (the same, where entry points are off: VERL_USE_EXTERNAL_PLUGINS=none)

    device = torch.device(args.device)
    batch = make_batch(args.rows, args.tokens, device, getattr(torch, args.dtype))
    unit = args.rows * args.tokens * 4  # one fp32 (B, T) tensor
    cases = {
        "vanilla": (actor_config("vanilla", "token-mean", 151936), {}),
        "gspo": (actor_config("gspo", "seq-mean-token-mean", 151936), {}),
        "espo": (actor_config("espo", "token-mean", 151936, args.grouping), {"old_entropy": batch["old_entropy"]}),
    }
    fns = {name: get_policy_loss_fn(name) for name in cases}
    loss_cases = {name: registered_case(fns[name], batch, config, extra) for name, (config, extra) in cases.items()}
    # Round-robin over the losses so that machine noise hits all of them alike.
    timed = round_robin(loss_cases, batch["log_prob"], device, args.repeats, args.warmup)
    results = {
        name: {"median_ms": timed[name]["median_ms"], "saved_for_backward_BT": timed[name]["saved_bytes"] / unit}
        for name in cases
    }
    if device.type == "cuda":
        for name, case in loss_cases.items():
            results[name]["cuda_peak_extra_BT"] = cuda_peak_extra(case, batch["log_prob"], device) / unit

    espo = results["espo"]["median_ms"]
    summary = {
        "device": device_label(device),
        "shape": [args.rows, args.tokens],
        "dtype": args.dtype,
        "espo_grouping": args.grouping,
        "results": results,
        "espo_over_gspo": espo / results["gspo"]["median_ms"],
        "espo_over_vanilla": espo / results["vanilla"]["median_ms"],
    }
    print(
        f"device {summary['device']}, batch {args.rows} x {args.tokens}, {args.dtype}, "
        f"espo.grouping={args.grouping}, forward+backward:"
    )
    for name, r in results.items():
        extra = f", CUDA peak +{r['cuda_peak_extra_BT']:.1f} (B,T)" if "cuda_peak_extra_BT" in r else ""
        print(
            f"  {name:8s} {r['median_ms']:9.2f} ms   saved for backward {r['saved_for_backward_BT']:.2f} (B,T){extra}"
        )
    print(f"ESPO / gspo    = {summary['espo_over_gspo']:.2f}x")
    print(f"ESPO / vanilla = {summary['espo_over_vanilla']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
