"""The smoke runner's algorithms, one per PPO smoke config; the GRPO and GSPO smoke configs: veRL's own losses on
veRL's own trainer, checked by composition (the trainer path they share with ESPO runs end to end in
``test_e2e_learning.py`` and ``test_e2e_vllm.py``)."""

from __future__ import annotations

import pytest


def test_smoke_algorithms_are_the_ppo_smoke_configs():
    """``verl_espo.smoke`` offers every ``<algo>_smoke.yaml`` on veRL's PPO trainer, not the SFT stage's config."""
    from verl_espo.smoke import ALGOS

    assert ALGOS == ("chord", "egspo", "espo", "grpo", "gspo")


@pytest.mark.parametrize("algo,loss_mode", [("grpo", "vanilla"), ("gspo", "gspo")])
def test_baseline_smoke_configs_are_the_espo_smoke_with_veRLs_own_loss_and_trainer(algo, loss_mode):
    """The GRPO and GSPO smoke configs run veRL's own loss on veRL's own `sync` trainer (nothing of the plugin
    but the CPU platform and the hf rollout, which every ESPO run exercises): they compose, pass veRL's driver
    checks, name a registered loss and trainer, and differ from the ESPO smoke config only in the algorithm."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from verl.trainer.main_ppo import validate_config
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
    from verl.utils.config import omega_conf_to_dataclass

    paths = ["actor_rollout_ref.model.path=/m", "data.train_files=/t", "data.val_files=/v"]
    configs = {}
    for name in (algo, "espo"):
        with initialize_config_module(config_module="verl_espo.config", version_base=None):
            configs[name] = OmegaConf.to_container(compose(config_name=f"{name}_smoke", overrides=paths))
    cfg = OmegaConf.create(configs[algo])
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == loss_mode
    assert cfg.trainer.v1.trainer_mode == "sync" and cfg.algorithm.adv_estimator == "grpo"
    get_trainer_cls("sync"), get_policy_loss_fn(loss_mode)  # registered in veRL
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    validate_config(config=cfg, use_reference_policy=False, use_critic=False)

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    theirs, ours = dict(flat(configs[algo])), dict(flat(configs["espo"]))
    differ = {k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k)}
    actor = "actor_rollout_ref.actor."
    algorithm_keys = (f"{actor}policy_loss.", f"{actor}loss_agg_mode", f"{actor}clip_ratio_",
                      f"{actor}entropy_from_logits_with_chunking", "trainer.experiment_name",
                      "trainer.v1.trainer_mode")  # fmt: skip
    assert all(k.startswith(algorithm_keys) for k in differ), sorted(differ)
