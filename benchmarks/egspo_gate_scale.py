"""How much does EGSPO's entropy gate shrink the RL part's gradient? EGSPO over CHORD-phi on the same batch.

On the bundled default (the toy model of :func:`verl_espo.toy.assets.build_assets`, the smoke run's step: 64
toy-task prompts x 8 responses sampled at temperature 1.0, responses <= 16 tokens, GRPO advantages from the
project reward), the RL part of the plugin's registered losses is backpropagated into the model's parameters:

* ``chord``: plain PPO token loss, token mean over the rollout tokens (CHORD-phi's RL part, CHORD Eq. 2);
* ``egspo`` with ``rl_normalization=tokens``: the gated loss over the same token count (the default);
* ``egspo`` with ``rl_normalization=gate_weight``: the gated loss over the sum of the gate's weights.

Strictly on-policy (old = current parameters, as in CHORD's setting): the PPO ratio is 1, so the gradient is
``sum_t w_t A_t grad log p_t / D``. The gate is the default ``gate=batch`` at ``rho = 0.2`` with ``phi = p(1-p)``
of the old policy. Printed: the mean gate weight, each gradient's L2 norm and the ratios egspo / chord.

    OMP_NUM_THREADS=1 python benchmarks/egspo_gate_scale.py --seeds 0 1 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_learnability import grpo_advantages, rollout, score, token_log_probs  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.workers.config import FSDPActorConfig  # noqa: E402

import verl_espo.losses  # noqa: E402,F401  (registers the plugin's losses)
from verl_espo.config import EGSPOConfig, HybridConfig, PluginPolicyLossConfig  # noqa: E402
from verl_espo.core.entropy import batch_entropy_threshold  # noqa: E402
from verl_espo.toy.assets import build_assets  # noqa: E402
from verl_espo.toy.task import make_row, sample_problems  # noqa: E402


def actor_config(loss_mode: str, rl_normalization: str = "tokens") -> FSDPActorConfig:
    """The smoke runs' actor PPO settings (clip 0.2 / 0.2, dual clip 3, token-mean) with the plugin's loss."""
    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=0.2,
        clip_ratio_high=0.2,
        clip_ratio_c=3.0,
        loss_agg_mode="token-mean",
        policy_loss=PluginPolicyLossConfig(
            loss_mode=loss_mode, egspo=EGSPOConfig(rl_normalization=rl_normalization), hybrid=HybridConfig()
        ),
    )


def grad_norm(model, batch: dict, loss_mode: str, rl_normalization: str = "tokens") -> tuple[float, dict]:
    """L2 norm over all parameters of the RL part's gradient (one micro-batch, one rank)."""
    model.zero_grad(set_to_none=True)
    log_prob, _ = token_log_probs(model, batch["ids"], batch["attn"], batch["prompt_len"], 1.0)
    loss, metrics = get_policy_loss_fn(loss_mode)(
        old_log_prob=batch["old_log_prob"],
        log_prob=log_prob,
        advantages=batch["advantages"],
        response_mask=batch["mask"],
        loss_agg_mode="token-mean",
        config=actor_config(loss_mode, rl_normalization),
        old_entropy=batch["entropy"],
        entropy_threshold=batch["threshold"],
    )
    loss.backward()
    norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None))
    return float(norm), metrics


def measure(model, tokenizer, seed: int, prompts: int, n: int, max_response: int, rho: float) -> dict:
    torch.manual_seed(seed)
    rows = [make_row(p, "train", i) for i, p in enumerate(sample_problems(prompts, seed=1000 + seed))]
    contents = [r["prompt"][0]["content"] for r in rows]
    truths = [r["reward_model"]["ground_truth"] for r in rows for _ in range(n)]
    ids, attn, mask, plen = rollout(model, tokenizer, contents, n, max_response, 1.0)
    rewards, _ = score(tokenizer, ids, mask, plen, truths)
    with torch.no_grad():
        old_log_prob, entropy = token_log_probs(model, ids, attn, plen, 1.0)
    advantages = grpo_advantages(torch.tensor(rewards), n).unsqueeze(1).expand_as(old_log_prob).contiguous()
    batch = {
        "ids": ids,
        "attn": attn,
        "prompt_len": plen,
        "mask": mask,
        "old_log_prob": old_log_prob,
        "entropy": entropy,
        "advantages": advantages * mask,
        "threshold": batch_entropy_threshold(entropy, mask, rho),
    }
    chord, _ = grad_norm(model, batch, "chord")
    by_tokens, metrics = grad_norm(model, batch, "egspo", "tokens")
    by_weight, metrics_w = grad_norm(model, batch, "egspo", "gate_weight")
    return {
        "seed": seed,
        "rollout_tokens": int(mask.sum()),
        "reward_mean": sum(rewards) / len(rewards),
        "entropy_threshold": batch["threshold"],
        "high_token_frac": metrics["actor/egspo/high_token_frac"],
        "gate_weight_mean": metrics_w["actor/egspo/gate_weight_mean"],
        "phi_mean_low": metrics["actor/egspo/phi_mean_low"],
        "grad_norm_chord": chord,
        "grad_norm_egspo_tokens": by_tokens,
        "grad_norm_egspo_gate_weight": by_weight,
        "ratio_tokens": by_tokens / chord,
        "ratio_gate_weight": by_weight / chord,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--prompts", type=int, default=64, help="prompts per step (smoke_cpu.yaml: 64)")
    p.add_argument("--n", type=int, default=8, help="responses per prompt (smoke_cpu.yaml: 8)")
    p.add_argument("--max-response", type=int, default=16, help="smoke_cpu.yaml: data.max_response_length 16")
    p.add_argument("--rho", type=float, default=0.2, help="egspo.high_entropy_ratio (default 0.2)")
    p.add_argument("--model", help="use these toy assets instead of building the default ones")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or str(build_assets(Path(tmp) / "toy"))
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        results = [measure(model, tokenizer, s, args.prompts, args.n, args.max_response, args.rho) for s in args.seeds]
    keys = ("seed", "rollout_tokens", "high_token_frac", "gate_weight_mean", "ratio_tokens", "ratio_gate_weight")
    print(" ".join(f"{k:>18}" for k in keys))
    for r in results:
        print(" ".join(f"{r[k]:>18.4g}" if isinstance(r[k], float) else f"{r[k]:>18}" for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
