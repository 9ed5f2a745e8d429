"""Typed, validated hyperparameters of the plugin's policy losses.

``actor_rollout_ref.actor.policy_loss._target_`` points at :class:`ESPOPolicyLossConfig`; Hydra
instantiates it (and its nested ``espo`` block) wherever veRL turns the actor config into a dataclass:
in the driver's ``validate_config`` (so bad values fail before Ray starts) and in every actor worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

__all__ = ["ESPOConfig", "ESPOPolicyLossConfig", "ESPO_KEY_PREFIX"]

#: Where the ``espo`` block lives in the full veRL config, for error messages.
ESPO_KEY_PREFIX = "actor_rollout_ref.actor.policy_loss.espo"

_CHOICES: dict[str, tuple[str, ...]] = {
    "grouping": ("sequence", "batch"),
    "ratio": ("gspo_token", "literal"),
    "clip": ("adaptive", "fixed"),
    "aggregation": ("paper", "actor"),
}


@dataclass
class ESPOConfig(BaseConfig):
    """ESPO hyperparameters (``policy_loss.espo.*``); equation numbers refer to arXiv 2512.00499.

    Args:
        grouping: How tokens are split into the high/low entropy groups (Eq. 7). ``sequence``: per
            response, the top ``ceil(rho * L)`` entropies and every token tied with the last of them.
            ``batch``: one threshold for the whole training step, computed by the ``espo_sync`` trainer.
        high_entropy_ratio: ``rho`` in (0, 1], the share of tokens in the high group (paper: ~0.2).
            ``1`` makes each response a single group (GSPO's sequence ratio).
        ratio: Eq. 9 reading. ``gspo_token``: the token's ratio has the group's geometric-mean value and
            its own gradient (GSPO-token form). ``literal``: the group ratio times the token ratio.
        clip: ``adaptive``: ``eps = alpha * mean_group_entropy / ln|V|`` per group (Eq. 8). ``fixed``:
            ``[1 - actor.clip_ratio_low, 1 + actor.clip_ratio_high]`` (the paper's ablation).
        alpha: Eq. 8 scale, > 0 (paper: 0.02).
        vocab_size: ``|V|`` of Eq. 8. ``None``: the actor model's ``config.vocab_size`` (logits size).
        aggregation: ``paper``: Eq. 5, each non-empty group weighs 1/K in its response, rows combined like
            veRL's ``seq-mean-token-sum``. ``actor``: the actor's ``loss_agg_mode`` on the token losses.
    """

    grouping: str = "sequence"
    high_entropy_ratio: float = 0.2
    ratio: str = "gspo_token"
    clip: str = "adaptive"
    alpha: float = 0.02
    vocab_size: Optional[int] = None
    aggregation: str = "paper"

    def __post_init__(self) -> None:
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise ValueError(f"{ESPO_KEY_PREFIX}.{key} must be one of {list(choices)}, got {value!r}")
        rho = self.high_entropy_ratio
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 < float(rho) <= 1.0:
            raise ValueError(f"{ESPO_KEY_PREFIX}.high_entropy_ratio must be in (0, 1], got {rho!r}")
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not float(alpha) > 0.0:
            raise ValueError(f"{ESPO_KEY_PREFIX}.alpha must be > 0, got {alpha!r}")
        vocab = self.vocab_size
        if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2):
            raise ValueError(f"{ESPO_KEY_PREFIX}.vocab_size must be null or an integer >= 2, got {vocab!r}")


def _coerce(value: Any, cls: type[BaseConfig], key: str) -> BaseConfig:
    """Turn a plain mapping (a block written without ``_target_``) into ``cls``, rejecting unknown keys."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{key} must be a mapping of {cls.__name__} fields, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in {key}; valid keys: {sorted(known - {'_target_'})}")
    return cls(**{k: v for k, v in value.items() if k != "_target_"})


@dataclass
class ESPOPolicyLossConfig(PolicyLossConfig):
    """veRL's :class:`PolicyLossConfig` plus the plugin's ``espo`` block.

    Select the loss with ``policy_loss.loss_mode=espo``; other loss modes ignore the block.
    """

    espo: ESPOConfig = field(default_factory=ESPOConfig)

    def __post_init__(self) -> None:
        # BaseConfig freezes fields once set, hence object.__setattr__ for the coercion.
        object.__setattr__(self, "espo", _coerce(self.espo, ESPOConfig, ESPO_KEY_PREFIX))
