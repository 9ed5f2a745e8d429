"""Precision of the old-policy entropy as veRL computes it, against float64, on realistic LLM logits.

veRL's FSDP engine computes the entropy with ``verl.utils.torch_functional.entropy_from_logits`` (softmax,
logsumexp and the sum in the logits' dtype) or, with ``entropy_from_logits_with_chunking``, with
``entropy_from_logits_with_chunking`` (each row chunk upcast to float32 first). See
``docs/entropy_precision.md`` for where each runs and which config keys select them.

The logits are bf16, as the model's ``lm_head`` returns them under FSDP's bf16 mixed precision: the top
logit of each row uniform in [20, 40], a few alternatives at random gaps below it (from near-ties to tens
of nats), and the other 151,928 columns spread as N(0, 2). The float64 reference is the entropy of these
same bf16 logits, ``-sum(p log p)`` from ``log_softmax`` in float64. Rows are processed in chunks so that
no more than a few hundred MB are live.

    python tests/test_entropy_precision.py            # the error table over 1,024 rows
    python tests/test_entropy_precision.py --cost     # time and peak memory of each path on CPU
"""

from __future__ import annotations

import argparse
import ctypes
import time
from pathlib import Path

import pytest
import torch
from verl.utils import torch_functional as verl_F

VOCAB = 151_936  # Qwen2.5/Qwen3
ROWS, CHUNK_ROWS = 192, 32


def realistic_logits(rows: int, generator: torch.Generator, n_alternatives: int = 8) -> torch.Tensor:
    """``(rows, VOCAB)`` bf16 logits: top in [20, 40], alternatives below it, the rest N(0, 2)."""
    top = 20.0 + 20.0 * torch.rand(rows, 1, generator=generator)
    logits = torch.randn(rows, VOCAB, generator=generator).mul_(2.0)
    first_gap = torch.pow(10.0, -0.7 + 2.2 * torch.rand(rows, 1, generator=generator))  # 0.2 .. 32 nats
    spacing = -torch.log(torch.rand(rows, n_alternatives - 1, generator=generator)) * 2.0
    gaps = torch.cat([torch.zeros(rows, 1), first_gap + torch.cumsum(spacing, dim=1) - spacing[:, :1]], dim=1)
    columns = torch.randperm(VOCAB, generator=generator)[:n_alternatives].expand(rows, -1)
    logits.scatter_(1, columns, top - gaps)
    return logits.bfloat16()


def reference_entropy(logits: torch.Tensor) -> torch.Tensor:
    """float64 ``-sum(p log p)`` of the given logits (a different formula from veRL's)."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def shift_invariant_entropy(logits: torch.Tensor) -> torch.Tensor:
    """float32 ``sum p (lse - logit)``: not veRL's, shown for scale. veRL's ``lse - sum(p * logit)`` subtracts
    two numbers of the logits' magnitude (~30), so its float32 error grows with it; this form does not."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    return (torch.softmax(x, dim=-1) * (lse - x)).sum(dim=-1)


PATHS = {
    # pure bf16: entropy_from_logits on bf16 logits where autocast does not upcast (CPU; see the docs)
    "bf16": lambda logits: verl_F.entropy_from_logits(logits),
    # entropy_from_logits_with_chunking: float32 per chunk (the path the plugin's configs select)
    "fp32_chunked": lambda logits: verl_F.entropy_from_logits_with_chunking(logits, chunk_size=16),
    # what CUDA autocast makes of entropy_from_logits on bf16 logits (softmax/logsumexp/sum run in float32)
    "fp32_autocast": lambda logits: verl_F.entropy_from_logits(logits.float()),
    # veRL's fused torch kernel: float32 arithmetic, result cast back to the logits' dtype
    "fused_torch_bf16_out": lambda logits: verl_F.entropy_from_logits_with_chunking(logits).bfloat16(),
    # not in veRL: the same float32 arithmetic in a shift-invariant form
    "fp32_shift_invariant": shift_invariant_entropy,
}


def entropies(rows: int = ROWS, chunk_rows: int = CHUNK_ROWS, seed: int = 0) -> dict[str, torch.Tensor]:
    """float64 reference and every path's entropies (as float64) for ``rows`` realistic rows."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {"reference": [], **{name: [] for name in PATHS}}
    for _ in range(0, rows, chunk_rows):
        logits = realistic_logits(chunk_rows, generator)
        out["reference"].append(reference_entropy(logits))
        for name, fn in PATHS.items():
            out[name].append(fn(logits).double())
    return {name: torch.cat(values) for name, values in out.items()}


BANDS = {"<1e-4": (0.0, 1e-4), "1e-4..1e-2": (1e-4, 1e-2), "1e-2..5e-2": (1e-2, 5e-2)}


def error_stats(values: dict[str, torch.Tensor], rho: float = 0.2) -> dict[str, dict[str, float]]:
    """Per path: max/mean abs error (nats); per band of reference entropy, the share that comes out exactly
    0; the relative error of the mean entropy of the low-entropy group (bottom ``1 - rho`` of all tokens)
    and of the confident tokens (reference < 0.1 nats), the two kinds of mean that ESPO's Eq. 8 takes."""
    ref = values["reference"]
    low = ref <= torch.quantile(ref, 1.0 - rho)
    confident = ref < 0.1
    stats = {}
    for name in PATHS:
        got = values[name]
        err = (got - ref).abs()
        stats[name] = {"max_abs": float(err.max()), "mean_abs": float(err.mean())}
        for band, (lo, hi) in BANDS.items():
            in_band = (ref >= lo) & (ref < hi)
            stats[name][f"zero_share_{band}"] = float((got[in_band] == 0).double().mean())
        for group, members in (("low_group", low), ("confident", confident)):
            mean_ref = ref[members].mean()
            stats[name][f"{group}_mean_rel_err"] = float((got[members].mean() - mean_ref).abs() / mean_ref)
    return stats


@pytest.fixture(scope="module")
def stats():
    values = entropies()
    ref = values["reference"]
    for lo, hi in BANDS.values():
        assert int(((ref >= lo) & (ref < hi)).sum()) >= 10  # the rows cover every band of confident tokens
    assert float((ref > 0.5).double().mean()) > 0.3  # ... and uncertain ones
    return error_stats(values)


def test_float32_path_is_within_a_tight_bound(stats):
    fp32 = stats["fp32_chunked"]
    assert fp32["max_abs"] < 4e-3 and fp32["mean_abs"] < 3e-4  # measured: 1.5e-3 / 1.0e-4 nats
    assert fp32["zero_share_1e-4..1e-2"] == 0.0  # only entropies below float32's resolution at |logit| ~ 30
    assert fp32["low_group_mean_rel_err"] < 2e-3 and fp32["confident_mean_rel_err"] < 2e-2
    assert stats["fp32_autocast"] == fp32  # CUDA autocast computes the same float32 arithmetic
    assert stats["fp32_shift_invariant"]["max_abs"] < fp32["max_abs"] / 5  # veRL's formula costs precision


def test_bf16_path_errors(stats):
    """The pure-bf16 path: lse and sum(p * logits) are ~30 and rounded to bf16 (ulp 0.125-0.25)."""
    bf16 = stats["bf16"]
    assert bf16["max_abs"] > 0.1 and bf16["mean_abs"] > 0.02  # measured: 0.28 / 0.06 nats
    assert bf16["zero_share_1e-4..1e-2"] == 1.0  # every entropy in [1e-4, 1e-2) nats comes out exactly 0
    assert bf16["max_abs"] > 50 * stats["fp32_chunked"]["max_abs"]
    assert bf16["confident_mean_rel_err"] > 10 * stats["fp32_chunked"]["confident_mean_rel_err"]


def test_bf16_output_of_the_fused_torch_kernel(stats):
    """Rounding a float32 entropy to bf16 keeps 8 bits of relative precision: small entropies survive."""
    fused = stats["fused_torch_bf16_out"]
    assert fused["zero_share_1e-4..1e-2"] == 0.0
    assert fused["max_abs"] < 1e-2  # ~2^-9 relative of entropies up to ~2 nats, plus the float32 error


def test_verl_entropy_dtypes():
    """The dtypes the docs rely on: bf16 in -> bf16 out unchunked, float32 out chunked."""
    logits = torch.randn(4, 1000).bfloat16()
    assert verl_F.entropy_from_logits(logits).dtype == torch.bfloat16
    assert verl_F.entropy_from_logits_with_chunking(logits, chunk_size=3).dtype == torch.float32


def test_cuda_autocast_runs_the_entropy_ops_in_float32():
    """CUDA autocast has float32 kernels for softmax, logsumexp and sum (checked in the dispatcher, no GPU
    needed); CPU autocast has none, so on CPU bf16 logits stay bf16."""
    has_kernel = getattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", None)
    if has_kernel is None:
        pytest.skip("this torch build does not expose the dispatcher query")
    for op in ("aten::softmax.int", "aten::logsumexp", "aten::sum.dim_IntList"):
        assert has_kernel(op, "AutocastCUDA"), op
    logits = torch.randn(4, 1000).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert verl_F.entropy_from_logits(logits).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------------
# By hand: the error table, and the cost of each path on CPU.


def _peak_extra_mb(fn) -> tuple[float, float]:
    """(seconds, peak resident memory above the start, MB) of one call, via the Linux high-water mark."""
    status = Path("/proc/self/status")

    def field(name: str) -> int:
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith(name))

    Path("/proc/self/clear_refs").write_text("5")
    before = field("VmRSS:")
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, (field("VmHWM:") - before) / 1024


def print_costs(tokens: int, chunk_sizes: list[int], repeats: int) -> None:
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: freed buffers leave the resident set
    logits = realistic_logits(tokens, torch.Generator().manual_seed(0))
    paths = {
        "bf16 (entropy_from_logits on bf16)": lambda: verl_F.entropy_from_logits(logits),
        "fp32 unchunked (what CUDA autocast computes)": lambda: verl_F.entropy_from_logits(logits.float()),
        **{
            f"fp32 chunked, chunk_size={c}": (lambda c=c: verl_F.entropy_from_logits_with_chunking(logits, c))
            for c in chunk_sizes
        },
    }
    print(
        f"{tokens} tokens x {VOCAB} bf16 logits ({logits.numel() * 2 / 2**20:.0f} MB), {torch.get_num_threads()}"
        f" CPU threads; {repeats} round-robin repeats"
    )
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            runs[name].append(_peak_extra_mb(fn))
    print("| path | best ms | median ms | best ms per 1k tokens | peak extra MB |")
    print("|---|---|---|---|---|")
    for name, measured in runs.items():
        seconds = sorted(r[0] for r in measured)
        best, median, memory = seconds[0], seconds[len(seconds) // 2], max(r[1] for r in measured)
        print(f"| {name} | {best * 1e3:.0f} | {median * 1e3:.0f} | {best * 1e6 / tokens:.0f} | {memory:.0f} |")


def print_errors(rows: int) -> None:
    values = entropies(rows=rows)
    ref = values["reference"]
    quantiles = torch.quantile(ref, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)).tolist()
    print(f"{rows} rows; reference entropy quantiles 10/25/50/75/90%: " + ", ".join(f"{q:.3g}" for q in quantiles))
    bands = ", ".join(f"{band}: {int(((ref >= lo) & (ref < hi)).sum())}" for band, (lo, hi) in BANDS.items())
    print(f"reference entropies by band: {bands}; < 0.1 (confident): {int((ref < 0.1).sum())}")
    print(
        "| path | max abs err (nats) | mean abs err | exactly 0, by reference band: <1e-4 / 1e-4..1e-2 / "
        "1e-2..5e-2 | mean rel. err: low group / confident tokens |"
    )
    print("|---|---|---|---|---|")
    for name, s in error_stats(values).items():
        zeros = " / ".join(f"{s[f'zero_share_{band}']:.0%}" for band in BANDS)
        print(
            f"| {name} | {s['max_abs']:.2e} | {s['mean_abs']:.2e} | {zeros} | "
            f"{s['low_group_mean_rel_err']:.1e} / {s['confident_mean_rel_err']:.1e} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cost", action="store_true", help="time and memory instead of errors")
    parser.add_argument("--tokens", type=int, default=1024, help="--cost: tokens in the micro-batch")
    parser.add_argument("--chunk-sizes", default="256,1024", help="--cost: veRL's chunk sizes to try")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cost:
        print_costs(args.tokens, [int(c) for c in args.chunk_sizes.split(",")], args.repeats)
    else:
        print_errors(args.rows)
