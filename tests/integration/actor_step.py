"""One actor step of a plugin loss through veRL's real worker code on CPU; run under ``torchrun`` (1 or 2 processes).

``ActorRolloutRefWorker(role="actor")`` builds the FSDP2 engine from the plugin's Hydra config (a case's
``config_name``: ``espo_trainer``, ``egspo_trainer``, ``chord_trainer``), the loss is installed with
``set_loss_fn`` exactly as the plugin's trainer does, ``compute_log_prob`` produces the old log-probs and
entropy, and ``update_actor`` runs the loss. The batch has the V1 trainer's layout (nested tensors, as the agent
loop puts them in TransferQueue). A case with ``experts`` (row indices) makes those rows expert demonstrations
(hybrid training): flagged ``is_expert``, zero advantage, and the trainer's step statistics (``mu``, per-type
counts, the threshold over rollout tokens) are attached as the plugin's trainer attaches them. Every case of
``--cases`` runs in one process group, each with its own worker; rank 0 writes a JSON report per case to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("VERL_PLATFORM", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def compose_config(model_path: str, overrides: list[str], config_name: str = "espo_trainer"):
    from hydra import compose, initialize_config_module

    base = [
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.model_dtype=fp32",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model]",
    ]
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        return compose(config_name=config_name, overrides=base + overrides)


def make_batch(tokenizer, n: int, seed: int, experts: frozenset[int] = frozenset()):
    """n samples in the V1 layout: nested prompts/responses/masks, like AgentLoopWorkerTQ writes them."""
    from verl.utils import tensordict_utils as tu

    g = torch.Generator().manual_seed(seed)
    vocab = len(tokenizer) - 3
    samples = []
    for i in range(n):
        prompt = torch.randint(3, vocab, (3 + i % 4,), generator=g)
        response = torch.randint(3, vocab, (1 + (i * 5) % 9,), generator=g)  # lengths 1..9
        input_ids = torch.cat([prompt, response])
        samples.append(
            {
                "prompts": prompt,
                "responses": response,
                "response_mask": torch.ones_like(response),
                "loss_mask": torch.ones_like(response),
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "position_ids": torch.arange(input_ids.numel()),
                "is_expert": torch.tensor([int(i in experts)]),
            }
        )
    return tu.list_of_dict_to_tensordict(samples)


def run_case(model: str, samples: int, config_name: str, experts: frozenset[int], mu: float, overrides: list[str]):
    """One actor step of one case on this rank; returns rank 0's report (None on other ranks)."""
    from omegaconf import open_dict
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested, response_to_nested

    from verl_espo.workers.actor_loss import make_actor_loss_fn

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    cfg = compose_config(model, overrides, config_name)
    with open_dict(cfg):
        cfg.trainer.n_gpus_per_node = world
    worker = ActorRolloutRefWorker(config=cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    worker.set_loss_fn(make_actor_loss_fn(cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.model))

    full = make_batch(worker.actor.model_config.tokenizer, samples, seed=1, experts=experts)
    if not experts:
        del full["is_expert"]
    per_rank = samples // world
    data = tu.index_select_tensor_dict(full, list(range(rank * per_rank, (rank + 1) * per_rank)))

    def old_pass(batch):
        batch = batch.clone()
        tu.assign_non_tensor(batch, calculate_entropy=True, compute_loss=False, temperature=1.0)
        out = worker.compute_log_prob(batch)
        return (
            response_from_nested(out["log_probs"], batch["response_mask"]),
            response_from_nested(out["entropy"], batch["response_mask"]),
        )

    old_log_probs, entropy = old_pass(data)
    g = torch.Generator().manual_seed(7)
    all_scores = torch.randn(samples, generator=g)
    all_scores[sorted(experts)] = 0.0  # expert rows: zero advantage (hybrid_grpo)
    scores = all_scores[rank * per_rank : (rank + 1) * per_rank]
    lengths = data["response_mask"].offsets().diff()
    padded_adv = scores[:, None].expand(-1, int(lengths.max())).contiguous()
    data["old_log_probs"] = old_log_probs
    data["entropy"] = entropy
    data["advantages"] = response_to_nested(padded_adv, data["response_mask"])
    from verl_espo.trainer.sync import hybrid_counts, step_threshold_ratio

    rho = step_threshold_ratio(cfg.actor_rollout_ref.actor.policy_loss)
    expert_rows = torch.tensor([i in experts for i in range(rank * per_rank, (rank + 1) * per_rank)])
    if rho is not None:
        # What the plugin's trainer does before update_actor: one threshold over the step's rollout tokens.
        from verl_espo.core.entropy import batch_entropy_threshold
        from verl_espo.workers.actor_loss import ENTROPY_THRESHOLD_KEY

        gathered = [None] * world
        dist.all_gather_object(gathered, [entropy[i] for i in range(per_rank) if not expert_rows[i]])
        values = torch.cat([t for part in gathered for t in part])
        threshold = batch_entropy_threshold(values, torch.ones_like(values, dtype=torch.bool), rho)
        tu.assign_non_tensor(data, **{ENTROPY_THRESHOLD_KEY: threshold})
    if experts:
        from verl_espo.workers.actor_loss import HYBRID_COUNTS_KEY, MU_KEY

        counts = hybrid_counts(full["response_mask"].offsets().diff(), full["is_expert"].reshape(-1))
        tu.assign_non_tensor(data, **{MU_KEY: mu, HYBRID_COUNTS_KEY: counts})
    tu.assign_non_tensor(
        data,
        calculate_entropy=False,
        global_batch_size=samples,
        mini_batch_size=samples,
        epochs=1,
        seed=0,
        dataloader_kwargs={"shuffle": False},
        temperature=1.0,
    )
    out = worker.update_actor(data)
    metrics = {k: v for k, v in tu.get(out, "metrics").items()}
    new_log_probs, _ = old_pass(data)

    # The trainer's `actor/entropy`: token-mean of the old entropy over the whole batch (all ranks).
    ent_sum = torch.tensor([entropy.values().double().sum().item(), float(entropy.values().numel())])
    dist.all_reduce(ent_sum)
    change = torch.tensor([(new_log_probs.values() - old_log_probs.values()).abs().max().item()])
    dist.all_reduce(change, op=dist.ReduceOp.MAX)
    # The update's effect on the demonstrations: mean change of the expert tokens' log-probs (all ranks).
    expert_change = torch.zeros(2, dtype=torch.float64)
    for i in range(per_rank):
        if expert_rows[i]:
            diff = (new_log_probs[i] - old_log_probs[i]).double()
            expert_change += torch.tensor([diff.sum().item(), float(diff.numel())])
    dist.all_reduce(expert_change)
    if rank != 0:
        return None
    from verl.utils.metric import reduce_metrics

    reduced = {
        k: float(v) for k, v in reduce_metrics(metrics).items() if isinstance(v, (int, float)) or hasattr(v, "item")
    }
    return {
        "world_size": world,
        "metrics": reduced,
        "trainer_entropy": ent_sum[0].item() / ent_sum[1].item(),
        "max_log_prob_change": change.item(),
        "expert_log_prob_change": expert_change[0].item() / max(expert_change[1].item(), 1.0),
        "finite": all(math.isfinite(v) for v in reduced.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="JSON file: {case name: report}, written by rank 0")
    parser.add_argument(
        "--cases",
        required=True,
        help="JSON file: {case name: {config_name, experts (row indices of expert rows), mu, overrides}}",
    )
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()

    dist.init_process_group("cpu:gloo")
    import verl  # noqa: F401  (entry point: losses, trainer, CPU platform)

    with open(args.cases) as f:
        cases = json.load(f)
    reports = {}
    for name, case in cases.items():  # every case in this one process group: one torchrun per world size
        reports[name] = run_case(
            args.model,
            args.samples,
            case.get("config_name", "espo_trainer"),
            frozenset(case.get("experts", ())),
            case.get("mu", 0.3),
            list(case.get("overrides", ())),
        )
        dist.barrier()
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(reports, f, indent=1, sort_keys=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
