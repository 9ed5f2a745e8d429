#!/usr/bin/env bash
# ESPO on GSM8K with Qwen2.5-0.5B-Instruct on one GPU node (vLLM rollout): the smallest real run.
#
# Data: veRL's GSM8K preprocessing (from a veRL checkout, it downloads openai/gsm8k):
#   python examples/data_preprocess/gsm8k.py --local_save_dir $HOME/data/gsm8k
# Then:
#   bash examples/espo_gsm8k_qwen2.5_0.5b.sh                       # ESPO
#   bash examples/espo_gsm8k_qwen2.5_0.5b.sh --cfg job             # print the composed config, run nothing
#   LOSS=grpo bash examples/espo_gsm8k_qwen2.5_0.5b.sh             # the same run with veRL's GRPO loss
# Extra arguments are Hydra overrides, e.g. actor_rollout_ref.actor.policy_loss.espo.alpha=0.05.
set -euo pipefail

DATA_DIR=${DATA_DIR:-$HOME/data/gsm8k}
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
GPUS=${GPUS:-1}
LOSS=${LOSS:-espo}

case "$LOSS" in
  espo) ALGO=() ;;  # everything comes from pkg://verl_espo.config/espo_trainer
  grpo) ALGO=(actor_rollout_ref.actor.policy_loss._target_=verl.workers.config.PolicyLossConfig
              '~actor_rollout_ref.actor.policy_loss.espo' actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
              trainer.v1.trainer_mode=sync) ;;
  *) echo "LOSS must be espo or grpo" >&2; exit 2 ;;
esac

python -m verl.trainer.main_ppo --config-path=pkg://verl_espo.config --config-name=espo_trainer \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    data.train_batch_size=128 \
    data.max_prompt_length=512 \
    data.max_response_length=1024 \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.use_remove_padding=true \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    trainer.n_gpus_per_node="$GPUS" \
    trainer.nnodes=1 \
    trainer.total_epochs=5 \
    trainer.test_freq=10 \
    trainer.save_freq=-1 \
    trainer.logger='[console]' \
    trainer.project_name=verl_espo_examples \
    trainer.experiment_name="gsm8k_qwen2.5_0.5b_$LOSS" \
    "${ALGO[@]}" "$@"
