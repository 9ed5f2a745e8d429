"""Timing harness shared by the loss benchmarks (``bench_losses.py``, ``bench_egspo_losses.py``).

A *case* is a function ``log_prob -> scalar loss``; the harness times its forward + backward on a fresh leaf
copy of ``log_prob``, round-robin over the cases so that machine noise hits all of them alike, and counts
the bytes autograd keeps for backward (saved-tensor hooks; the input leaf itself is not counted).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch

__all__ = [
    "LossCase",
    "Run",
    "make_batch",
    "run_once",
    "round_robin",
    "cuda_peak_extra",
    "profile_case",
    "device_label",
]

#: ``log_prob`` (a leaf with ``requires_grad``) -> scalar loss.
LossCase = Callable[[torch.Tensor], torch.Tensor]


def make_batch(rows: int, tokens: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict:
    """Padded ``(rows, tokens)`` batch: response lengths uniform in ``[tokens // 8, tokens]``, log-probs in
    ``[-3, 0]`` with a small policy change, one advantage per row, entropies uniform in ``[0, 2]``."""
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Run(NamedTuple):
    """One forward + backward.

    ``saved_bytes`` sums every tensor saved for backward (a tensor saved by two nodes counts twice; the figure
    the performance doc has used from the start); ``distinct_bytes`` counts each storage once, at its full size
    (what autograd actually keeps alive, inputs of the batch included). The input leaf is in neither.
    """

    wall_s: float
    cpu_s: float  # CPU time of the whole process (all threads): the work done, less sensitive to a busy machine
    saved_bytes: int
    distinct_bytes: int


def run_once(case: LossCase, log_prob: torch.Tensor, device: torch.device) -> Run:
    """Time one forward + backward of ``case`` on a fresh leaf copy of ``log_prob``."""
    lp = log_prob.detach().clone().requires_grad_(True)
    saved: list[int] = []
    storages: dict[int, int] = {}
    lp_storage = lp.untyped_storage().data_ptr()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() != lp_storage:
            saved.append(t.numel() * t.element_size())
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = case(lp)
    loss.backward()
    _sync(device)
    return Run(time.perf_counter() - start, time.process_time() - cpu_start, sum(saved), sum(storages.values()))


def round_robin(
    cases: Mapping[str, LossCase], log_prob: torch.Tensor, device: torch.device, repeats: int, warmup: int
) -> dict[str, dict]:
    """Time every case ``repeats`` times, one of each in turn, after ``warmup`` untimed runs of each.

    Returns per case: ``median_ms``, ``min_ms``, ``max_ms``, ``times_ms`` (wall, in run order), ``cpu_median_ms``,
    ``cpu_times_ms`` (process CPU time), ``saved_bytes`` and ``distinct_bytes`` (see :class:`Run`).
    """
    for case in cases.values():
        for _ in range(warmup):
            run_once(case, log_prob, device)
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            runs[name].append(run_once(case, log_prob, device))
    results = {}
    for name, case_runs in runs.items():
        wall = [1e3 * r.wall_s for r in case_runs]
        cpu = [1e3 * r.cpu_s for r in case_runs]
        results[name] = {
            "median_ms": statistics.median(wall),
            "min_ms": min(wall),
            "max_ms": max(wall),
            "times_ms": wall,
            "cpu_median_ms": statistics.median(cpu),
            "cpu_times_ms": cpu,
            "saved_bytes": case_runs[-1].saved_bytes,
            "distinct_bytes": case_runs[-1].distinct_bytes,
        }
    return results


def cuda_peak_extra(case: LossCase, log_prob: torch.Tensor, device: torch.device) -> int:
    """CUDA bytes allocated at the peak of one forward + backward, above the allocation before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run_once(case, log_prob, device)
    return torch.cuda.max_memory_allocated() - base


def profile_case(case: LossCase, log_prob: torch.Tensor, device: torch.device, row_limit: int = 15) -> str:
    """torch.profiler table (self time, forward and backward ops) of one forward + backward."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    run_once(case, log_prob, device)  # warm
    with profile(activities=activities) as prof:
        run_once(case, log_prob, device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=row_limit)


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
