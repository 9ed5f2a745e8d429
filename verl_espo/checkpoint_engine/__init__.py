"""Checkpoint engines the plugin adds to veRL: ``gloo`` (weights from the trainer to standalone rollout replicas
over gloo, no GPU needed), selected with ``actor_rollout_ref.rollout.checkpoint_engine.backend=gloo``.

Importing this package registers it in veRL's public ``CheckpointEngineRegistry``; the plugin's entry point does
that in every veRL process (the ``checkpoint_engine`` piece of :data:`verl_espo._plugin.PIECES`). Without the
entry point, ``checkpoint_engine.custom_backend_module=verl_espo.checkpoint_engine`` has veRL import it.
"""

from verl.checkpoint_engine.base import CheckpointEngineRegistry

from verl_espo.checkpoint_engine.gloo import BACKEND_NAME, CheckpointEngineError, GlooCheckpointEngine

__all__ = ["BACKEND_NAME", "CheckpointEngineError", "GlooCheckpointEngine", "register"]


def register() -> None:
    """Register the ``gloo`` backend (idempotent); refuse to replace another class registered under that name."""
    try:
        taken = CheckpointEngineRegistry.get(BACKEND_NAME)
    except ValueError:  # not registered yet
        taken = GlooCheckpointEngine
    if taken is not GlooCheckpointEngine:
        raise RuntimeError(
            f"checkpoint engine backend {BACKEND_NAME!r} is already registered by {taken.__module__}."
            f"{taken.__qualname__}; verl-espo does not replace it"
        )
    CheckpointEngineRegistry.register(BACKEND_NAME)(GlooCheckpointEngine)


register()
