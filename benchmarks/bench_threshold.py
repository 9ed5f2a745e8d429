"""Time the step-level entropy threshold (``espo.grouping=batch``, EGSPO's ``gate=batch``) at the ESPO paper's scale.

One training step of the paper is 1,024 responses x up to 16,384 tokens (128 prompts x 8 samples, 16k
max length): 16.8M old-policy entropies, of which the ``ceil(0.2 N)`` = 3.4M-th largest is the threshold.
This runs, on the same data and round-robin so machine noise hits both alike:

* ``topk``: :func:`verl_espo.core.entropy.batch_entropy_threshold` (masked copy, ``torch.topk``, ``min``);
* ``kthvalue``: the same masked copy, then ``torch.kthvalue`` (quickselect on CPU).

It checks the two agree exactly, and reports the best and median time and the peak extra memory of each
(host: the process's peak resident set above its size before the call, measured by resetting the Linux
high-water mark; CUDA: ``max_memory_allocated`` above the allocation before the call).

    python benchmarks/bench_threshold.py                        # 1024 x 16384, float32, nested layout
    python benchmarks/bench_threshold.py --dtype bfloat16
    python benchmarks/bench_threshold.py --layout padded        # (B, T) with random lengths, bool mask
    python benchmarks/bench_threshold.py --rows 64 --repeats 2  # quick check

The entropies imitate an LLM's on reasoning text: about half below 0.01 nats, a fifth above ~0.5 nats with
a tail to several nats, 5% exactly zero, all quantised to bfloat16 (many exact ties).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import statistics
import time
from pathlib import Path

import torch

from verl_espo.core.entropy import batch_entropy_threshold, high_entropy_count

LN_VOCAB = math.log(151_936)  # Qwen3's vocabulary: the entropy's upper bound


def realistic_entropy(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` bf16-quantised entropies (float32): 55% confident (~1e-4), 25% medium (~0.1), 20% high (~1.3)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g)
    log10_h = torch.randn(n, generator=g)
    log10_h.mul_(torch.where(u < 0.55, 1.0, torch.where(u < 0.80, 0.5, 0.25)))
    log10_h.add_(torch.where(u < 0.55, -4.0, torch.where(u < 0.80, -1.0, 0.1)))
    entropy = torch.pow(10.0, log10_h).clamp_(max=LN_VOCAB)
    entropy[u > 0.95] = 0.0
    return entropy.bfloat16().float()


def make_inputs(rows: int, tokens: int, layout: str, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """``nested``: the flat ``.values()`` the trainer gets from TransferQueue (every token valid, int64 mask);
    ``padded``: ``(rows, tokens)`` with response lengths uniform in [tokens/8, tokens] and a bool mask."""
    if layout == "nested":
        entropy = realistic_entropy(rows * tokens, seed)
        mask = torch.ones(rows * tokens, dtype=torch.int64)
    else:
        g = torch.Generator().manual_seed(seed + 1)
        lengths = torch.randint(tokens // 8, tokens + 1, (rows,), generator=g)
        mask = torch.arange(tokens)[None, :] < lengths[:, None]
        entropy = realistic_entropy(rows * tokens, seed).view(rows, tokens)
    return entropy.to(device=device, dtype=dtype), mask.to(device)


def high_share_count(rho: float, n: int) -> int:
    return int(high_entropy_count(rho, torch.tensor(n)))


def kthvalue_threshold(entropy: torch.Tensor, mask: torch.Tensor, rho: float) -> float:
    values = entropy.reshape(-1)[mask.reshape(-1).bool()].to(
        torch.float64 if entropy.dtype == torch.float64 else torch.float32
    )
    n = values.numel()
    if n == 0:
        return math.inf
    k = high_share_count(rho, n)
    return float(torch.kthvalue(values, n - k + 1).values.item())  # k-th largest = (n-k+1)-th smallest


METHODS = {"topk": batch_entropy_threshold, "kthvalue": kthvalue_threshold}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _host_rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _return_freed_memory_at_once() -> None:
    """Serve every allocation above 64 KB with its own mmap (glibc), so freed buffers leave the resident set
    and the peak resident set measures what a call itself needs, not what earlier calls left cached."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD; also stops glibc raising it
    except (OSError, AttributeError):
        pass


def peak_extra_mb(fn, device: torch.device) -> float | None:
    """Peak memory the call adds on top of what is allocated before it (MB)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (Linux >= 4.0)
        before = _host_rss_kb("VmRSS")
        fn()
        return (_host_rss_kb("VmHWM") - before) / 1024
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--layout", choices=["nested", "padded"], default="nested")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float64"], default="float32")
    parser.add_argument("--rho", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="topk,kthvalue")
    parser.add_argument("--step-seconds", type=float, default=60.0, help="assumed training step time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the results (and the device) to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _return_freed_memory_at_once()

    device = torch.device(args.device)
    methods = {name: METHODS[name] for name in args.methods.split(",")}
    entropy, mask = make_inputs(args.rows, args.tokens, args.layout, getattr(torch, args.dtype), device)
    n_valid = int(torch.count_nonzero(mask))
    k = high_share_count(args.rho, n_valid)
    print(
        f"{args.layout} {tuple(entropy.shape)} {args.dtype} on {device} ({torch.get_num_threads()} threads): "
        f"N={n_valid:,} valid, k={k:,} (rho={args.rho}); input {entropy.numel() * entropy.element_size() / 2**20:.0f}"
        f" MB + mask {mask.numel() * mask.element_size() / 2**20:.0f} MB"
    )

    results = {name: fn(entropy, mask, args.rho) for name, fn in methods.items()}  # warm-up and agreement
    reference = results.get("topk", next(iter(results.values())))
    for name, value in results.items():
        if value != reference:
            raise SystemExit(f"{name} gave {value!r}, topk {reference!r}: not exact")

    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            _sync(device)
            start = time.perf_counter()
            fn(entropy, mask, args.rho)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    memory = {name: peak_extra_mb(lambda fn=fn: fn(entropy, mask, args.rho), device) for name, fn in methods.items()}

    base = statistics.median(times["topk"]) if "topk" in times else None
    print(f"threshold = {reference!r} (all methods equal)")
    print(f"| method | best ms | median ms | peak extra MB | median / topk | share of a {args.step_seconds:g} s step |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name in methods:
        best, median = min(times[name]) * 1e3, statistics.median(times[name]) * 1e3
        ratio = f"{median / (base * 1e3):.3f}" if base else "-"
        mem = f"{memory[name]:.0f}" if memory[name] is not None else "n/a"
        share = median / 1e3 / args.step_seconds
        print(f"| {name} | {best:.0f} | {median:.0f} | {mem} | {ratio} | {share:.2%} |")
        summary[name] = {"best_ms": best, "median_ms": median, "peak_extra_mb": memory[name]}
    result = {"n_valid": n_valid, "k": k, "dtype": args.dtype, "layout": args.layout, **summary}
    print(json.dumps(result))
    if args.json:
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        extra = {"device": device_name, "shape": [args.rows, args.tokens], "threshold": reference}
        with open(args.json, "w") as f:
            json.dump(extra | result, f, indent=1)


if __name__ == "__main__":
    main()
