"""Precision, time and memory of veRL's entropy paths on the device, against a float64 reference.

The GPU counterpart of ``tests/test_entropy_precision.py`` (see ``docs/entropy_precision.md``): bf16 logits of
Qwen's vocabulary (151,936), each row's top logit uniform in [20, 40], a few alternatives at random gaps below
it and the rest N(0, 2) (the test's recipe, generated here on the device). The reference is the float64
``-sum(p log p)`` of the same bf16 logits. Paths, all veRL 0.9.1's own functions on the bf16 logits:

* ``bf16_plain``: ``entropy_from_logits`` with no autocast (pure bf16 unless the device upcasts by itself);
* ``autocast``: ``entropy_from_logits`` inside ``torch.autocast(device, bfloat16)``, as veRL's FSDP engine runs
  it (``forward_step``) with chunking off. The docs claim, from the source, that CUDA autocast upcasts
  softmax / logsumexp / sum to float32: the output dtype and the error settle it;
* ``chunked``: ``entropy_from_logits_with_chunking`` (what the plugin's configs select; each chunk ``.float()``);
* ``chunked_autocast``: the same inside autocast (what the engine really runs with chunking on);
* ``--compile``: also ``autocast_compiled`` / ``chunked_compiled``, the two wrapped in
  ``torch.compile(dynamic=True)`` as veRL does when ``fsdp_config.use_torch_compile`` (its default) is on.

Per path: output dtype, max / mean absolute error (nats), the share of entropies below 0.01 nats (and per band)
that come out exactly 0, the relative error of the confident tokens' mean entropy, the best and median time,
and the peak memory the call allocates above what was allocated before it (CUDA; ``null`` on CPU). The JSON is
rewritten after every path, so a run cut short keeps what it measured.

    python benchmarks/bench_entropy.py --json entropy.json              # 16,384 rows on CUDA
    python benchmarks/bench_entropy.py --rows 256 --device cpu          # quick, on CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from verl.utils import torch_functional as verl_F

VOCAB = 151_936  # Qwen2.5 / Qwen3
BANDS = {"<1e-4": (0.0, 1e-4), "1e-4..1e-2": (1e-4, 1e-2), "1e-2..5e-2": (1e-2, 5e-2), "<1e-2": (0.0, 1e-2)}


def realistic_logits(rows: int, vocab: int, generator: torch.Generator, n_alternatives: int = 8) -> torch.Tensor:
    """``(rows, vocab)`` bf16 logits on the generator's device, by the recipe of
    ``tests/test_entropy_precision.py::realistic_logits``: top in [20, 40], alternatives below it at gaps from
    near-ties to tens of nats, the other columns N(0, 2)."""
    device = generator.device
    top = 20.0 + 20.0 * torch.rand(rows, 1, generator=generator, device=device)
    logits = torch.randn(rows, vocab, generator=generator, device=device).mul_(2.0)
    first_gap = torch.pow(10.0, -0.7 + 2.2 * torch.rand(rows, 1, generator=generator, device=device))
    spacing = -torch.log(torch.rand(rows, n_alternatives - 1, generator=generator, device=device)) * 2.0
    gaps = torch.cat(
        [torch.zeros(rows, 1, device=device), first_gap + torch.cumsum(spacing, dim=1) - spacing[:, :1]], dim=1
    )
    columns = torch.randperm(vocab, generator=generator, device=device)[:n_alternatives].expand(rows, -1)
    logits.scatter_(1, columns, top - gaps)
    return logits.bfloat16()


def make_logits(rows: int, vocab: int, device: torch.device, seed: int, chunk_rows: int) -> torch.Tensor:
    """All rows, generated ``chunk_rows`` at a time so that only one float32 chunk is live besides the result."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(rows, vocab, dtype=torch.bfloat16, device=device)
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        out[start:stop] = realistic_logits(stop - start, vocab, generator)
    return out


def reference_entropy(logits: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """float64 ``-sum(p log p)`` of the given logits, ``chunk_rows`` rows at a time."""
    parts = []
    for start in range(0, logits.shape[0], chunk_rows):
        log_p = torch.log_softmax(logits[start : start + chunk_rows].double(), dim=-1)
        parts.append(-(log_p.exp() * log_p).sum(dim=-1))
        del log_p
    return torch.cat(parts)


def paths(device: torch.device, chunk_size: int, compile_: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def under_autocast(fn):
        def run(logits: torch.Tensor) -> torch.Tensor:
            with autocast():
                return fn(logits)

        return run

    chunked = lambda z: verl_F.entropy_from_logits_with_chunking(z, chunk_size=chunk_size)  # noqa: E731
    out = {
        "bf16_plain": verl_F.entropy_from_logits,
        "autocast": under_autocast(verl_F.entropy_from_logits),
        "chunked": chunked,
        "chunked_autocast": under_autocast(chunked),
    }
    if compile_:
        # veRL: torch.compile(entropy_from_logits[_with_chunking], dynamic=True), called inside autocast.
        compiled_plain = torch.compile(verl_F.entropy_from_logits, dynamic=True)
        compiled_chunked = torch.compile(verl_F.entropy_from_logits_with_chunking, dynamic=True)
        out["autocast_compiled"] = under_autocast(compiled_plain)
        out["chunked_compiled"] = under_autocast(lambda z: compiled_chunked(z, chunk_size=chunk_size))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, logits: torch.Tensor, device: torch.device, repeats: int) -> dict:
    """Output (first call, also the warm-up / compilation), times of ``repeats`` further calls, CUDA peak."""
    _sync(device)
    start = time.perf_counter()
    out = fn(logits)
    _sync(device)
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn(logits)
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(logits)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return {
        "out": out,
        "first_call_ms": 1e3 * first_s,
        "best_ms": 1e3 * min(times),
        "median_ms": 1e3 * statistics.median(times),
        "peak_extra_mb": peak,
    }


def error_stats(got: torch.Tensor, ref: torch.Tensor) -> dict:
    got = got.double()
    err = (got - ref).abs()
    stats = {"max_abs_err": float(err.max()), "mean_abs_err": float(err.mean())}
    for band, (lo, hi) in BANDS.items():
        members = (ref >= lo) & (ref < hi)
        stats[f"zero_share_{band}"] = float((got[members] == 0).double().mean()) if members.any() else None
    confident = ref < 0.1
    mean_ref = ref[confident].mean()
    stats["confident_mean_rel_err"] = float((got[confident].mean() - mean_ref).abs() / mean_ref)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16384, help="token rows (one micro-batch)")
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--chunk-size", type=int, default=2048, help="veRL's entropy_from_logits_chunk_size")
    parser.add_argument("--gen-rows", type=int, default=1024, help="rows per chunk for generation and reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also the torch.compile'd paths (veRL's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the results to this file (rewritten after every path)")
    args = parser.parse_args()

    device = torch.device(args.device)
    logits = make_logits(args.rows, args.vocab, device, args.seed, args.gen_rows)
    ref = reference_entropy(logits, args.gen_rows)
    quantiles = torch.quantile(ref.float().cpu(), torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])).tolist()
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": args.rows,
        "vocab": args.vocab,
        "logits_mb": logits.numel() * logits.element_size() / 2**20,
        "chunk_size": args.chunk_size,
        "reference_quantiles_10_25_50_75_90": quantiles,
        "reference_counts": {b: int(((ref >= lo) & (ref < hi)).sum()) for b, (lo, hi) in BANDS.items()},
        "paths": {},
    }
    print(
        f"{args.rows} rows x {args.vocab} bf16 logits ({summary['logits_mb']:.0f} MB) on {summary['device']}, "
        f"torch {torch.__version__}; reference quantiles 10/25/50/75/90%: " + ", ".join(f"{q:.3g}" for q in quantiles)
    )
    print(f"reference counts by band: {summary['reference_counts']}")
    print("| path | out dtype | max abs err | mean abs err | zero share <1e-2 | best ms | median ms | peak extra MB |")
    print("|---|---|---|---|---|---|---|---|")
    outputs: dict[str, torch.Tensor] = {}
    for name, fn in paths(device, args.chunk_size, args.compile).items():
        try:
            m = measure(fn, logits, device, args.repeats)
        except Exception as exc:  # one path failing (e.g. compilation) must not lose the others
            summary["paths"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"| {name} | FAILED: {type(exc).__name__}: {str(exc)[:300]} |")
        else:
            out = m.pop("out")
            outputs[name] = out
            entry = {"out_dtype": str(out.dtype).removeprefix("torch."), **error_stats(out, ref), **m}
            summary["paths"][name] = entry
            peak = f"{entry['peak_extra_mb']:.0f}" if entry["peak_extra_mb"] is not None else "n/a"
            print(
                f"| {name} | {entry['out_dtype']} | {entry['max_abs_err']:.3g} | {entry['mean_abs_err']:.3g} | "
                f"{entry['zero_share_<1e-2']:.0%} | {entry['best_ms']:.1f} | {entry['median_ms']:.1f} | {peak} |"
            )
        if "autocast" in outputs and "chunked" in outputs:
            diff = (outputs["autocast"].double() - outputs["chunked"].double()).abs().max()
            summary["autocast_minus_chunked_max_abs"] = float(diff)
            summary["autocast_upcasts_to_float32"] = outputs["autocast"].dtype == torch.float32
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=1)
    if "autocast_upcasts_to_float32" in summary:
        verdict = "upcasts to float32" if summary["autocast_upcasts_to_float32"] else "does NOT upcast"
        print(
            f"{device.type} autocast {verdict}: autocast output {outputs['autocast'].dtype}, max |autocast - chunked|"
            f" = {summary['autocast_minus_chunked_max_abs']:.3g} nats"
        )


if __name__ == "__main__":
    main()
