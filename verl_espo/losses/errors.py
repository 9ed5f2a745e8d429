"""Errors of the plugin's policy losses when an input that only the plugin's trainer provides is missing."""

from __future__ import annotations

__all__ = ["MissingLossInputError", "missing_old_entropy_message"]


class MissingLossInputError(RuntimeError):
    """A plugin loss was called without an input that the plugin's trainer and actor loss hand over."""


def missing_old_entropy_message(what: str, loss_mode: str) -> str:
    """The error text for a loss that needs the old policy's per-token entropy and did not get it."""
    return (
        f"{what} the old policy's entropy, but no `old_entropy` reached the `{loss_mode}` loss. Train with the "
        "plugin's trainer, `trainer.v1.trainer_mode=plugin_sync` (the default of `--config-path=pkg://verl_espo.config "
        f"--config-name={loss_mode}_trainer`), which installs the entropy-aware actor loss. The old entropy is "
        "computed in veRL's V1 old-log-prob pass; `algorithm.rollout_correction.bypass_mode=true` skips that pass and "
        "the legacy trainer (`trainer.use_v1=false`) drops the entropy, so neither can run this loss. When calling "
        "the loss directly, pass `old_entropy=` (shape (batch, response_length))."
    )
