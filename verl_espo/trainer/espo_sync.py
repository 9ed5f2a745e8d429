"""The ``espo_sync`` trainer of earlier releases: the plugin's trainer under its old name (kept working)."""

from verl_espo.trainer.checks import check_trainer_config
from verl_espo.trainer.sync import PluginTrainerSync

#: The class registered as ``espo_sync`` (and ``plugin_sync``).
ESPOTrainerSync = PluginTrainerSync

__all__ = ["ESPOTrainerSync", "check_trainer_config"]
