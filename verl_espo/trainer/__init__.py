"""V1 trainers the plugin registers with ``verl.trainer.ppo.v1.register_trainer``."""

from verl_espo.trainer.espo_sync import ESPOTrainerSync

__all__ = ["ESPOTrainerSync"]
