"""Time ESPO against veRL's own ``gspo`` and ``vanilla`` policy losses, measured in the same run.

Forward + backward of each registered loss on the same padded batch (default 256 rows x 8192 tokens,
responses of random length), on CUDA if available, else CPU. Reports the median time, the ratio to
veRL's ``gspo`` and ``vanilla``, and the memory the loss keeps for backward (in units of one fp32
(B, T) tensor) plus the CUDA peak when on GPU.

    python benchmarks/bench_losses.py                       # 256 x 8192
    python benchmarks/bench_losses.py --rows 64 --tokens 2048 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def make_batch(rows: int, tokens: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict:
    g = torch.Generator(device="cpu").manual_seed(seed)
    lengths = torch.randint(tokens // 8, tokens + 1, (rows,), generator=g)
    mask = torch.arange(tokens)[None, :] < lengths[:, None]
    old = -torch.rand(rows, tokens, generator=g) * 3
    batch = {
        "old_log_prob": old,
        "log_prob": old + torch.randn(rows, tokens, generator=g) * 0.05,
        "advantages": torch.randn(rows, 1, generator=g).expand(rows, tokens).contiguous(),
        "response_mask": mask,
        "old_entropy": torch.rand(rows, tokens, generator=g) * 2,
    }
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}


def actor_config(loss_mode: str, loss_agg_mode: str, vocab_size: int):
    from verl.workers.config import FSDPActorConfig

    from verl_espo.config import ESPOConfig, ESPOPolicyLossConfig

    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        clip_ratio_low=3e-4 if loss_mode == "gspo" else 0.2,
        clip_ratio_high=4e-4 if loss_mode == "gspo" else 0.28,
        policy_loss=ESPOPolicyLossConfig(loss_mode=loss_mode, espo=ESPOConfig(vocab_size=vocab_size)),
    )


def run_once(fn, batch: dict, config, extra: dict, device: torch.device) -> tuple[float, int]:
    lp = batch["log_prob"].detach().clone().requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size() if t.data_ptr() != lp.data_ptr() else 0)
        return t

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = fn(
            old_log_prob=batch["old_log_prob"],
            log_prob=lp,
            advantages=batch["advantages"],
            response_mask=batch["response_mask"],
            loss_agg_mode=config.loss_agg_mode,
            config=config,
            **extra,
        )
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    import verl  # noqa: F401  (registers the plugin's losses)
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    device = torch.device(args.device)
    batch = make_batch(args.rows, args.tokens, device, getattr(torch, args.dtype))
    unit = args.rows * args.tokens * 4  # one fp32 (B, T) tensor
    cases = {
        "vanilla": (actor_config("vanilla", "token-mean", 151936), {}),
        "gspo": (actor_config("gspo", "seq-mean-token-mean", 151936), {}),
        "espo": (actor_config("espo", "token-mean", 151936), {"old_entropy": batch["old_entropy"]}),
    }
    fns = {name: get_policy_loss_fn(name) for name in cases}
    for name, (config, extra) in cases.items():
        for _ in range(args.warmup):
            run_once(fns[name], batch, config, extra, device)
    # Round-robin over the losses so that machine noise hits all of them alike.
    times: dict[str, list[float]] = {name: [] for name in cases}
    saved: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, (config, extra) in cases.items():
            t, saved[name] = run_once(fns[name], batch, config, extra, device)
            times[name].append(t)
    results = {
        name: {"median_ms": 1e3 * statistics.median(times[name]), "saved_for_backward_BT": saved[name] / unit}
        for name in cases
    }
    if device.type == "cuda":
        for name, (config, extra) in cases.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run_once(fns[name], batch, config, extra, device)
            results[name]["cuda_peak_extra_BT"] = (torch.cuda.max_memory_allocated() - base) / unit

    espo = results["espo"]["median_ms"]
    summary = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "shape": [args.rows, args.tokens],
        "dtype": args.dtype,
        "results": results,
        "espo_over_gspo": espo / results["gspo"]["median_ms"],
        "espo_over_vanilla": espo / results["vanilla"]["median_ms"],
    }
    print(f"device {summary['device']}, batch {args.rows} x {args.tokens}, {args.dtype}, forward+backward:")
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
