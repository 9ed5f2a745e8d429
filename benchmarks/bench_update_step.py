"""Step time of one actor update micro-batch with each policy loss: ESPO / EGSPO overhead against veRL's GRPO.

One micro-batch of the actor update as veRL 0.9.1's FSDP engine runs it (``forward_step``, padded layout):
a random-weight Qwen2.5-0.5B- (or Qwen3-0.6B-) shaped causal LM built from a ``transformers`` config (no
download; bf16 parameters, ``sdpa`` attention, gradient checkpointing as the recipes set it), forward on
``rows x tokens`` token ids inside ``torch.autocast(bfloat16)``, the response's log-probs with
``verl.utils.torch_functional.logprobs_from_logits`` (optionally its chunked entropy too, as when
``entropy_coeff != 0``), the policy loss from veRL's registry (``get_policy_loss_fn``), backward. No optimizer.

The losses are called exactly as ``bench_losses.py`` (``vanilla``, ``gspo``, ``espo``) and
``bench_egspo_losses.py`` (``egspo_batch``, ``egspo_seq``, ``chord``, ``vanilla+sft``, ``hybrid_egspo``,
``hybrid_chord``) build them: same config objects, same extra inputs. ``old_log_prob`` and ``old_entropy`` come
from a no-grad forward of the same model (veRL's old-log-prob pass: chunked float32 entropy), so the ratio is 1
as in the first mini-batch of a step; advantages are one random value per row, response lengths uniform in
[R/8, R]. The step threshold of the ``batch`` gate is computed once, outside the timed step (the trainer does
it once per step; ``bench_threshold.py`` times it).

Steps run round-robin over the losses (noise hits all alike). Reported per loss: median / min step time, the
ratio to ``vanilla`` (and ``vanilla+sft`` for the hybrid cases) in the same run, the loss's own forward +
backward time on the same log-probs (``loss_timing.round_robin``) and its share of the step, CUDA peak memory.

    python benchmarks/bench_update_step.py --json step.json                 # Qwen2.5-0.5B shape, 8 x 2048
    python benchmarks/bench_update_step.py --model qwen3-0.6b
    python benchmarks/bench_update_step.py --layers 2 --hidden 64 --vocab 4096 --rows 2 --tokens 128 --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from loss_timing import device_label, round_robin

#: ``transformers`` configs of the two shapes (hidden, layers, heads, KV heads, head dim, MLP, vocab as released).
SHAPES = {
    "qwen2.5-0.5b": dict(
        model_type="qwen2",
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        vocab_size=151_936,
    ),
    "qwen3-0.6b": dict(
        model_type="qwen3",
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        vocab_size=151_936,
    ),
}
#: Cases whose baseline is ``vanilla+sft`` rather than ``vanilla``.
HYBRID = ("hybrid_egspo", "hybrid_chord")


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(SHAPES[args.model])
    model_type = shape.pop("model_type")
    if args.vocab:
        shape["vocab_size"] = args.vocab
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    if args.hidden:  # a small model for a quick run: keep head counts and dims consistent
        shape.update(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_attention_heads=4)
        shape.update(num_key_value_heads=2, head_dim=args.hidden // 4)
    config = AutoConfig.for_model(model_type, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    if not args.no_grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def make_inputs(args: argparse.Namespace, vocab: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(1)
    response = args.tokens - args.prompt_tokens
    lengths = torch.randint(response // 8, response + 1, (args.rows,), generator=g)
    return {
        "input_ids": torch.randint(0, vocab, (args.rows, args.tokens), generator=g).to(device),
        "response_mask": (torch.arange(response)[None, :] < lengths[:, None]).to(device),
        "advantages": torch.randn(args.rows, 1, generator=g).expand(args.rows, response).contiguous().to(device),
    }


def forward_log_probs(model, input_ids: torch.Tensor, response: int, entropy: bool, chunk_size: int):
    """veRL's actor forward for one padded micro-batch: logits of the response positions, their log-probs
    (``logprobs_from_logits``) and, if asked, the chunked entropy. Inside autocast, as ``forward_step``."""
    from verl.utils import torch_functional as verl_F

    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16):
        logits = model(input_ids=input_ids, use_cache=False).logits  # (B, T, V), bf16
        logits = logits[:, -response - 1 : -1, :]  # dp_actor: the positions that predict the response
        log_prob = verl_F.logprobs_from_logits(logits, input_ids[:, -response:])
        ent = None
        if entropy:
            flat = logits.reshape(-1, logits.shape[-1])
            ent = verl_F.entropy_from_logits_with_chunking(flat, chunk_size=chunk_size).view(log_prob.shape)
    return log_prob, ent


def logprobs_path() -> str:
    """Which kernel ``logprobs_from_logits`` takes here (flash-attn's cross entropy where installed)."""
    import os

    from verl.utils import torch_functional as verl_F

    if verl_F.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE and os.environ.get("VERL_DISABLE_FLASH_ATTN_CE", "0") != "1":
        return "flash_attn cross_entropy"
    return "logprobs_from_logits_v2 (log_softmax per row; no flash-attn)"


def loss_cases(batch: dict, vocab: int) -> dict:
    """Every loss as ``log_prob -> loss``, built by the loss benchmarks' own functions."""
    from bench_egspo_losses import build_cases
    from bench_losses import actor_config, registered_case
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    cases = {}
    for name, agg, extra in (
        ("vanilla", "token-mean", {}),
        ("gspo", "seq-mean-token-mean", {}),
        ("espo", "token-mean", {"old_entropy": batch["old_entropy"]}),
    ):
        config = actor_config(name, agg, vocab)
        cases[name] = registered_case(get_policy_loss_fn(name), batch, config, extra)
    egspo_cases = build_cases(batch, expert_frac=0.2, mu=0.1, rho=0.2)
    egspo_cases.pop("vanilla")  # the same loss as bench_losses' vanilla, with the EGSPO recipe's clip range
    return cases | egspo_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--layers", type=int, help="override the number of layers (quick runs)")
    parser.add_argument("--hidden", type=int, help="override the hidden size (quick runs)")
    parser.add_argument("--vocab", type=int, help="override the vocabulary size (quick runs)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per row, prompt + response")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--entropy", action="store_true", help="also the chunked entropy (entropy_coeff != 0)")
    parser.add_argument("--chunk-size", type=int, default=2048, help="veRL's entropy_from_logits_chunk_size")
    parser.add_argument("--no-grad-checkpointing", action="store_true")
    parser.add_argument("--cases", help="comma-separated subset of the losses (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not 0 < args.prompt_tokens < args.tokens:
        raise SystemExit(f"--prompt-tokens must be in (0, --tokens={args.tokens}); got {args.prompt_tokens}")

    import verl  # noqa: F401

    import verl_espo.losses  # noqa: F401  (registers the plugin's losses where entry points are off)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    start = time.perf_counter()
    model = build_model(args, device)
    params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    inputs = make_inputs(args, vocab, device)
    response = args.tokens - args.prompt_tokens
    with torch.no_grad():  # the old-log-prob pass: veRL computes the entropy there (chunked, float32)
        old_log_prob, old_entropy = forward_log_probs(model, inputs["input_ids"], response, True, args.chunk_size)
    batch = {
        "old_log_prob": old_log_prob.float(),
        "log_prob": old_log_prob.float(),
        "advantages": inputs["advantages"],
        "response_mask": inputs["response_mask"],
        "old_entropy": old_entropy.float(),
    }
    cases = loss_cases(batch, vocab)
    if args.cases:
        wanted = args.cases.split(",")
        unknown = sorted(set(wanted) - set(cases))
        if unknown or "vanilla" not in wanted:
            raise SystemExit(f"--cases: unknown {unknown} or no 'vanilla' (needed for ratios); cases: {list(cases)}")
        cases = {name: cases[name] for name in wanted}
    setup_s = time.perf_counter() - start
    print(
        f"{args.model} shape ({params / 1e6:.0f}M params, {model.config.num_hidden_layers} layers, vocab {vocab}), "
        f"bf16, sdpa, gradient checkpointing {'off' if args.no_grad_checkpointing else 'on'}; micro-batch "
        f"{args.rows} x {args.tokens} tokens ({response} response); entropy in the step: {args.entropy}; "
        f"{device_label(device)}; log-probs: {logprobs_path()}; setup {setup_s:.1f} s"
    )

    def step(case) -> tuple[float, float | None, float | None]:
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        log_prob, _ = forward_log_probs(model, inputs["input_ids"], response, args.entropy, args.chunk_size)
        loss = case(log_prob)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - before) / 2**30 if cuda else None
        total = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        return wall, peak, total

    for case in cases.values():
        for _ in range(args.warmup):
            step(case)
    times: dict[str, list[float]] = {name: [] for name in cases}
    peaks: dict[str, tuple[float | None, float | None]] = {}
    for _ in range(args.repeats):
        for name, case in cases.items():
            wall, peak, total = step(case)
            times[name].append(1e3 * wall)
            peaks[name] = (
                (peak, total)
                if peak is None or name not in peaks
                else (max(peaks[name][0], peak), max(peaks[name][1], total))
            )
    model.zero_grad(set_to_none=True)
    # The loss alone (forward + backward) on float32 log-probs of the same shape, round-robin too.
    loss_only = round_robin(cases, batch["log_prob"], device, max(args.repeats, 5), 2)

    results = {}
    for name in cases:
        median = statistics.median(times[name])
        results[name] = {
            "step_median_ms": median,
            "step_min_ms": min(times[name]),
            "step_times_ms": times[name],
            "loss_median_ms": loss_only[name]["median_ms"],
            "loss_share_of_step": loss_only[name]["median_ms"] / median,
            "cuda_peak_step_gb": peaks[name][0],  # above the allocation before the step (model, batch)
            "cuda_peak_total_gb": peaks[name][1],  # everything allocated, at the step's peak
        }
    for name, r in results.items():
        base = "vanilla+sft" if name in HYBRID and "vanilla+sft" in results else "vanilla"
        r["baseline"] = base
        r["ratio_median"] = r["step_median_ms"] / results[base]["step_median_ms"]
        r["ratio_min"] = r["step_min_ms"] / results[base]["step_min_ms"]
        r["ratio_to_vanilla"] = r["step_median_ms"] / results["vanilla"]["step_median_ms"]
        r["overhead_ms"] = r["step_median_ms"] - results[base]["step_median_ms"]
    tokens = args.rows * args.tokens
    summary = {
        "device": device_label(device),
        "torch": torch.__version__,
        "model": args.model,
        "params": params,
        "layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size,
        "vocab": vocab,
        "shape": [args.rows, args.tokens],
        "response_tokens": response,
        "entropy_in_step": args.entropy,
        "logprobs_path": logprobs_path(),
        "gradient_checkpointing": not args.no_grad_checkpointing,
        "repeats": args.repeats,
        "setup_s": setup_s,
        "tokens_per_s_vanilla": tokens / (results["vanilla"]["step_median_ms"] / 1e3),
        "results": results,
    }
    print(f"{args.repeats} round-robin steps per loss after {args.warmup} warm-up; forward + loss + backward:")
    print(
        "| loss | step median ms (min) | / baseline (median, min) | / vanilla | loss alone ms | loss share "
        "| peak GB: step (total) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        peak = "n/a"
        if r["cuda_peak_step_gb"] is not None:
            peak = f"+{r['cuda_peak_step_gb']:.1f} ({r['cuda_peak_total_gb']:.1f})"
        print(
            f"| {name} | {r['step_median_ms']:.1f} ({r['step_min_ms']:.1f}) | {r['ratio_median']:.3f}x, "
            f"{r['ratio_min']:.3f}x ({r['baseline']}) | {r['ratio_to_vanilla']:.3f}x | {r['loss_median_ms']:.2f} | "
            f"{r['loss_share_of_step']:.2%} | {peak} |"
        )
    print(f"vanilla: {summary['tokens_per_s_vanilla']:,.0f} tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
