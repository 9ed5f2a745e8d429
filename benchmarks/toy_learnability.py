"""Does RL visibly raise the reward on the bundled toy task? A standalone GRPO loop on CPU, no veRL trainer.

It builds the bundled assets (:func:`verl_espo.toy.assets.build_assets`) and dataset
(:func:`verl_espo.toy.task.write_dataset`), then does in one process what veRL's GRPO smoke run does:
per step, ``--prompts`` prompts x ``--n`` samples from HF ``generate`` (temperature 1, no top-k/top-p),
the project reward (:func:`verl_espo.rewards.math.compute_score`), group-normalised advantages
(veRL's ``grpo``: ``(r - mean) / (std + 1e-6)``), and token-level clipped PPO (token-mean, clip 0.2)
with AdamW (weight decay 0.01, grad clip 1.0) over ``--prompts / --mini`` mini-batches, one epoch.
Validation is greedy decoding, as veRL's default ``val_kwargs`` do, on the validation split
(``val_acc``) and on each of the task's 55 problems once (``table_acc``).

    OMP_NUM_THREADS=1 python benchmarks/toy_learnability.py    # about 30 s on one core
    python benchmarks/toy_learnability.py --seed 1 --json curves.json

The defaults are the recommended veRL smoke settings. Measured with them (default assets, RL seeds 0-4,
one CPU thread, ~19 s of RL each): training reward 0.08-0.11 over the first 5 steps, 0.54-0.66 over the
last 8; greedy validation accuracy 0.07-0.13 -> 0.57-0.67 at step 40; every problem once (``table_acc``)
0.16 -> 0.47-0.62. With a format-only warm-up (``--echo-fraction 0``) the reward stays at 0.10 (2 of 3
seeds) or creeps to 0.26.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd
import torch

from verl_espo.rewards.math import compute_score
from verl_espo.toy.assets import build_assets
from verl_espo.toy.task import DATA_SOURCE, all_problems, write_dataset
from verl_espo.toy.warmup import chat_prompt

FORMAT = re.compile(r"\\boxed\{\d\}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=64, help="prompts per step (veRL data.train_batch_size)")
    p.add_argument("--n", type=int, default=8, help="samples per prompt (rollout.n)")
    p.add_argument("--mini", type=int, default=16, help="prompts per PPO mini-batch (ppo_mini_batch_size)")
    p.add_argument("--epochs", type=int, default=1, help="PPO epochs per step (ppo_epochs)")
    p.add_argument("--tie", action="store_true", help="tie input and output embeddings")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--lr-warmup",
        type=int,
        default=0,
        help="linear lr warm-up steps as veRL's optim.lr_warmup_steps (lr x step/warmup, from 0)",
    )
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-response", type=int, default=16)
    p.add_argument("--ops", default="+", help="operations of the task, e.g. '+' or '+-'")
    p.add_argument("--n-train", type=int, default=2560, help="training rows (2560 = 40 steps of 64)")
    p.add_argument("--n-val", type=int, default=128)
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="RL seed (data order, sampling)")
    p.add_argument("--asset-seed", type=int, default=0, help="seed of build_assets (init and warm-up)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=150)
    p.add_argument("--echo-fraction", type=float, default=0.5, help="share of echo prompts in the warm-up")
    p.add_argument("--model", help="use these assets instead of building them")
    p.add_argument("--json", help="write the curves here")
    return p.parse_args()


def encode_prompts(tokenizer, contents: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and attention mask, as veRL's RL dataset builds them."""
    ids = [tokenizer.encode(chat_prompt(tokenizer, c), add_special_tokens=False) for c in contents]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return input_ids, mask


@torch.no_grad()
def rollout(model, tokenizer, contents: list[str], n: int, max_new: int, temperature: float | None):
    """Sampled (or greedy when ``temperature`` is None) responses: full ids, attention mask, response mask."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, contents)
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)
    sampling = dict(do_sample=False)
    if temperature:
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        max_new_tokens=max_new,
        **sampling,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    response = out[:, prompt_ids.shape[1] :]
    is_eos = (response == tokenizer.eos_token_id).int()
    after_eos = (is_eos.cumsum(1) - is_eos) > 0  # tokens after the first eos
    response_mask = ~after_eos
    attention_mask = torch.cat([prompt_mask, response_mask.long()], 1)
    return out, attention_mask, response_mask, prompt_ids.shape[1]


def token_log_probs(
    model, ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of the response tokens, at the sampling temperature."""
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, prompt_len - 1 : -1] / temperature
    logp = torch.log_softmax(logits.float(), -1)
    tokens = ids[:, prompt_len:]
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy


def score(tokenizer, ids, response_mask, prompt_len: int, truths: list[str]) -> tuple[list[float], list[bool]]:
    """Project reward of each response, and whether it is exactly ``\\boxed{<digit>}`` + eos."""
    scores, well_formed = [], []
    for row, mask, truth in zip(ids[:, prompt_len:], response_mask, truths):
        row = row[mask]
        text = tokenizer.decode(row, skip_special_tokens=True)
        scores.append(compute_score(DATA_SOURCE, text, truth)["score"])
        well_formed.append(bool(FORMAT.fullmatch(text)) and row[-1].item() == tokenizer.eos_token_id)
    return scores, well_formed


def grpo_advantages(rewards: torch.Tensor, n: int) -> torch.Tensor:
    groups = rewards.view(-1, n)
    adv = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-6)
    return adv.view(-1)


def greedy_accuracy(model, tokenizer, contents: list[str], truths: list[str], max_new: int) -> float:
    ids, _, response_mask, plen = rollout(model, tokenizer, contents, 1, max_new, None)
    return sum(score(tokenizer, ids, response_mask, plen, truths)[0]) / len(truths)


def validate(model, tokenizer, val: pd.DataFrame, table: list, max_new: int) -> tuple[float, float]:
    """Greedy accuracy on the validation split and on every problem of the task once (the whole table)."""
    val_acc = greedy_accuracy(
        model, tokenizer, [p[0]["content"] for p in val.prompt], [r["ground_truth"] for r in val.reward_model], max_new
    )
    table_acc = greedy_accuracy(model, tokenizer, [p.prompt for p in table], [p.ground_truth for p in table], max_new)
    return val_acc, table_acc


def ppo_update(model, optimizer, batch: dict, args: argparse.Namespace) -> None:
    """One epoch (``--epochs``) of token-level clipped PPO over mini-batches, token-mean per mini-batch."""
    model.train()
    ids, attn, mask, old_logp, adv = batch["ids"], batch["attn"], batch["mask"], batch["old_logp"], batch["adv"]
    per_mini = args.mini * args.n
    for _ in range(args.epochs):
        for lo in range(0, ids.shape[0], per_mini):
            sl = slice(lo, lo + per_mini)
            logp, _ = token_log_probs(model, ids[sl], attn[sl], batch["prompt_len"], args.temperature)
            ratio = torch.exp(logp - old_logp[sl])
            a = adv[sl].unsqueeze(1)
            pg = -torch.minimum(ratio * a, ratio.clamp(1 - args.clip, 1 + args.clip) * a)
            loss = (pg * mask[sl]).sum() / mask[sl].sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    model.eval()


def grpo_step(model, tokenizer, optimizer, rows: pd.DataFrame, args: argparse.Namespace) -> dict:
    """Roll out, score, compute advantages and old log-probs, update; returns the step's metrics."""
    contents = [p[0]["content"] for p in rows.prompt]
    truths = [r["ground_truth"] for r in rows.reward_model for _ in range(args.n)]
    ids, attn, resp_mask, plen = rollout(model, tokenizer, contents, args.n, args.max_response, args.temperature)
    rewards, well_formed = score(tokenizer, ids, resp_mask, plen, truths)
    with torch.no_grad():
        old_logp, entropy = token_log_probs(model, ids, attn, plen, args.temperature)
    mask = resp_mask.float()
    batch = {
        "ids": ids,
        "attn": attn,
        "mask": mask,
        "old_logp": old_logp,
        "prompt_len": plen,
        "adv": grpo_advantages(torch.tensor(rewards), args.n),
    }
    ppo_update(model, optimizer, batch, args)
    return {
        "reward": sum(rewards) / len(rewards),
        "format": sum(well_formed) / len(well_formed),
        "entropy": ((entropy * mask).sum() / mask.sum()).item(),
    }


def main() -> None:
    args = parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="toy_learnability_"))
    t0 = time.perf_counter()
    model_dir = args.model or build_assets(
        tmp / "model",
        warmup_steps=args.warmup_steps,
        echo_fraction=args.echo_fraction,
        seed=args.asset_seed,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        tie_word_embeddings=args.tie,
    )
    build_s = time.perf_counter() - t0
    ops = tuple(args.ops)
    train_path, val_path = write_dataset(tmp / "data", args.n_train, args.n_val, seed=args.seed, ops=ops)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    train, val, table = pd.read_parquet(train_path), pd.read_parquet(val_path), all_problems(ops)
    order = list(range(len(train)))
    random.Random(args.seed).shuffle(order)  # veRL's dataloader shuffles too
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    print(
        f"assets: {model_dir} ({model.num_parameters()} params, built in {build_s:.1f}s); "
        f"{args.prompts} prompts x {args.n} samples per step, lr {args.lr}"
    )
    print("step  reward  format  entropy  val_acc  table_acc   sec")

    curve: dict = {"step": [], "reward": [], "format": [], "entropy": [], "val": {}, "table": {}}
    curve["val"][0], curve["table"][0] = validate(model, tokenizer, val, table, args.max_response)
    print(f"{0:4d}  {'':6}  {'':6}  {'':7}  {curve['val'][0]:7.3f}  {curve['table'][0]:9.3f}")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:  # veRL steps its scheduler once per training step
            group["lr"] = args.lr * min(1.0, (step - 1) / args.lr_warmup) if args.lr_warmup else args.lr
        idx = [order[((step - 1) * args.prompts + j) % len(order)] for j in range(args.prompts)]
        metrics = grpo_step(model, tokenizer, optimizer, train.iloc[idx], args)
        curve["step"].append(step)
        for key, value in metrics.items():
            curve[key].append(value)
        line = f"{step:4d}  {metrics['reward']:6.3f}  {metrics['format']:6.2f}  {metrics['entropy']:7.3f}"
        if step % args.val_every == 0 or step == args.steps:
            curve["val"][step], curve["table"][step] = validate(model, tokenizer, val, table, args.max_response)
            line += f"  {curve['val'][step]:7.3f}  {curve['table'][step]:9.3f}"
        else:
            line += " " * 20
        print(f"{line}  {time.perf_counter() - start:5.1f}", flush=True)

    k = max(1, args.steps // 5)
    first, last = sum(curve["reward"][:k]) / k, sum(curve["reward"][-k:]) / k
    print(
        f"train reward: first {k} steps {first:.3f} -> last {k} steps {last:.3f}; "
        f"val acc {curve['val'][0]:.3f} -> {curve['val'][args.steps]:.3f}; "
        f"table acc {curve['table'][0]:.3f} -> {curve['table'][args.steps]:.3f}; "
        f"RL {time.perf_counter() - start:.0f}s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "build_s": build_s, **curve}, indent=1))


if __name__ == "__main__":
    main()
