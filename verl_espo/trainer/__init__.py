"""V1 trainers the plugin registers with ``verl.trainer.ppo.v1.register_trainer``: ``plugin_sync``,
``plugin_colocate_async`` and ``plugin_separate_async``."""

from verl_espo.trainer.sync import PluginTrainerSync

__all__ = ["PluginTrainerSync"]

import verl_espo.advantages  # noqa: E402,F401  advantage estimators (hybrid_grpo, espo_verified) in the trainer process
