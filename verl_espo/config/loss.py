"""Typed, validated hyperparameters of the plugin's policy losses.

``actor_rollout_ref.actor.policy_loss._target_`` points at :class:`PluginPolicyLossConfig` (veRL's
``PolicyLossConfig`` plus one field per settings block that a loss's ``LossSpec.config_blocks`` names); Hydra
instantiates it wherever veRL turns the actor config into a dataclass: in the driver's ``validate_config``
(so bad values fail before Ray starts) and in every actor worker. The blocks are written in YAML without a
``_target_``: :class:`PluginPolicyLossConfig` builds each one from its mapping, so an unknown key fails with the
block's dotted key and its valid keys.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

__all__ = [
    "ESPOConfig",
    "EGSPOConfig",
    "HybridConfig",
    "PluginPolicyLossConfig",
    "ESPO_KEY_PREFIX",
    "EGSPO_KEY_PREFIX",
    "HYBRID_KEY_PREFIX",
]

#: V1 trainer modes that run the plugin's trainer.
PLUGIN_TRAINER_MODES = ("plugin_sync", "plugin_colocate_async", "plugin_separate_async")

#: Where each block lives in the full veRL config, for error messages.
POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"
ESPO_KEY_PREFIX = f"{POLICY_LOSS_KEY}.espo"
EGSPO_KEY_PREFIX = f"{POLICY_LOSS_KEY}.egspo"
HYBRID_KEY_PREFIX = f"{POLICY_LOSS_KEY}.hybrid"

_CHOICES: dict[str, tuple[str, ...]] = {
    "grouping": ("sequence", "batch", "token"),
    "ratio": ("gspo_token", "literal"),
    "clip": ("adaptive", "fixed"),
    "aggregation": ("paper", "actor"),
    "ties": ("join", "position"),
}


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_choice(prefix: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{prefix}.{key} must be one of {list(choices)}, got {value!r}")


def _check_ratio(prefix: str, key: str, value: Any) -> None:
    """A share in (0, 1]."""
    if not _is_number(value) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{prefix}.{key} must be in (0, 1], got {value!r}")


@dataclass
class ESPOConfig(BaseConfig):
    """ESPO hyperparameters (``policy_loss.espo.*``); equation numbers refer to arXiv 2512.00499.

    Args:
        grouping: How tokens are split into groups (Eq. 7). ``sequence``: per response, a high group of the
            top ``ceil(rho * L)`` entropies and every token tied with the last of them, and a low group of the
            rest. ``batch``: the same with one threshold for the whole training step, computed by the
            plugin's trainer. ``token``: every valid token is its own group (its own ratio and
            ``eps_t = alpha * H_t / ln|V|``), the token-level reading of the paper's "w/o entropy grouping"
            ablation (Sec. 4.4, Table 2); ``high_entropy_ratio`` and ``ties`` do not apply and must keep
            their defaults.
        high_entropy_ratio: ``rho`` in (0, 1], the share of tokens in the high group (paper: ~0.2).
            ``1`` makes each response a single group (GSPO's sequence ratio).
        ratio: Eq. 9 reading. ``gspo_token``: the token's ratio has the group's geometric-mean value and
            its own gradient (GSPO-token form). ``literal``: the group ratio times the token ratio.
        clip: ``adaptive``: ``eps = alpha * mean_group_entropy / ln|V|`` per group (Eq. 8). ``fixed``:
            ``[1 - actor.clip_ratio_low, 1 + actor.clip_ratio_high]`` (the paper's ablation).
        alpha: Eq. 8 scale, > 0 (paper: 0.02).
        vocab_size: ``|V|`` of Eq. 8. ``None``: the actor model's ``config.vocab_size`` (logits size).
        aggregation: ``paper``: Eq. 5, each non-empty group weighs 1/K in its response, rows combined like
            veRL's ``seq-mean-token-sum`` (with ``grouping=token`` every token weighs ``1/L``: a
            seq-mean-token-mean). ``actor``: the actor's ``loss_agg_mode`` on the token losses.
        ties: ``grouping=sequence`` only. ``join``: tokens tied with the k-th largest entropy all join the high
            group (Eq. 7's entropy range; a row of equal entropies is one group). ``position``: the earliest tied
            tokens join until the high group has exactly ``k`` tokens.
        eps_min: floor on each group's clip half-width, ``eps = max(alpha * H / ln|V|, eps_min)``, >= 0. The
            default 0 keeps Eq. 8 as printed (and never lets a group's eps go negative).
    """

    grouping: str = "sequence"
    high_entropy_ratio: float = 0.2
    ratio: str = "gspo_token"
    clip: str = "adaptive"
    alpha: float = 0.02
    vocab_size: Optional[int] = None
    aggregation: str = "paper"
    ties: str = "join"
    eps_min: float = 0.0

    def __post_init__(self) -> None:
        for key, choices in _CHOICES.items():
            _check_choice(ESPO_KEY_PREFIX, key, getattr(self, key), choices)
        if not _is_number(self.eps_min) or not 0.0 <= float(self.eps_min) < 1.0:
            raise ValueError(f"{ESPO_KEY_PREFIX}.eps_min must be in [0, 1), got {self.eps_min!r}")
        _check_ratio(ESPO_KEY_PREFIX, "high_entropy_ratio", self.high_entropy_ratio)
        if self.grouping == "token":
            # A key that would silently do nothing is refused, so that a sweep over it cannot run unnoticed.
            for key in ("high_entropy_ratio", "ties"):
                default = _ESPO_DEFAULTS[key]
                if getattr(self, key) != default:
                    raise ValueError(
                        f"{ESPO_KEY_PREFIX}.{key} has no effect with {ESPO_KEY_PREFIX}.grouping=token (every token is "
                        f"its own group); leave it at its default {default!r} (got {getattr(self, key)!r}), or use "
                        "grouping=sequence or grouping=batch"
                    )
        alpha = self.alpha
        if not _is_number(alpha) or not float(alpha) > 0.0:
            raise ValueError(f"{ESPO_KEY_PREFIX}.alpha must be > 0, got {alpha!r}")
        vocab = self.vocab_size
        if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2):
            raise ValueError(f"{ESPO_KEY_PREFIX}.vocab_size must be null or an integer >= 2, got {vocab!r}")


#: ESPOConfig's defaults, for the keys that ``grouping=token`` ignores.
_ESPO_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ESPOConfig)}


@dataclass
class EGSPOConfig(BaseConfig):
    """EGSPO's entropy gate (``policy_loss.egspo.*``, arXiv 2602.03309; see ``docs/egspo.md``).

    Rollout tokens whose old-policy entropy is high get the full PPO token loss; the others get it times
    ``phi_scale * p (1 - p)`` (CHORD's phi, arXiv 2508.11408 Eq. 5), ``p`` the sampled token's probability.

    Args:
        gate: ``batch``: high = ``H >=`` the ``ceil(rho * N)``-th largest entropy of the ``N`` rollout tokens of
            the whole training step (computed once per step by the plugin's trainer). ``sequence``: per
            response, ESPO's high group (top ``ceil(rho * L)`` and ties). ``threshold``: ``H >= threshold``.
        high_entropy_ratio: ``rho`` in (0, 1] for the ``batch`` and ``sequence`` gates (default 0.2, the
            80/20 share of Wang et al., arXiv 2506.01939, that EGSPO's introduction cites).
        threshold: the fixed entropy threshold in nats for ``gate=threshold`` (required there, else unused).
        phi_source: ``old``: ``p = exp(old_log_prob)``; ``current``: ``p = exp(log_prob)``, detached.
        phi_scale: multiplies ``phi`` (``4`` makes its maximum 1), > 0.
        rl_normalization: the RL part's denominator with ``loss_agg_mode=token-mean``. ``tokens``: the step's
            rollout tokens, attenuated ones included (CHORD Eq. 2's ``1 / sum |o_i|``, the default reading).
            ``gate_weight``: the sum of the gate's weights ``sum w_t`` over the rollout tokens, so the RL part is a
            ``w``-weighted token mean and its gradient keeps CHORD-phi's scale (the mini-batch's rollout tokens
            times the step's mean ``w``, computed by the trainer before the update, hence ``phi_source=old``;
            exactly ``sum w_t`` when the step is one mini-batch, as in hybrid training).
    """

    gate: str = "batch"
    high_entropy_ratio: float = 0.2
    threshold: Optional[float] = None
    phi_source: str = "old"
    phi_scale: float = 1.0
    rl_normalization: str = "tokens"

    def __post_init__(self) -> None:
        _check_choice(EGSPO_KEY_PREFIX, "gate", self.gate, ("batch", "sequence", "threshold"))
        _check_choice(EGSPO_KEY_PREFIX, "phi_source", self.phi_source, ("old", "current"))
        _check_choice(EGSPO_KEY_PREFIX, "rl_normalization", self.rl_normalization, ("tokens", "gate_weight"))
        if self.rl_normalization == "gate_weight" and self.phi_source != "old":
            raise ValueError(
                f"{EGSPO_KEY_PREFIX}.rl_normalization=gate_weight needs {EGSPO_KEY_PREFIX}.phi_source=old (the sum "
                "of the gate's weights is computed once per step from the old policy, before the update); got "
                f"phi_source={self.phi_source!r}"
            )
        _check_ratio(EGSPO_KEY_PREFIX, "high_entropy_ratio", self.high_entropy_ratio)
        if not _is_number(self.phi_scale) or not float(self.phi_scale) > 0.0:
            raise ValueError(f"{EGSPO_KEY_PREFIX}.phi_scale must be > 0, got {self.phi_scale!r}")
        if self.gate == "threshold":
            if not _is_number(self.threshold) or not math.isfinite(float(self.threshold)):
                raise ValueError(
                    f"{EGSPO_KEY_PREFIX}.gate=threshold needs {EGSPO_KEY_PREFIX}.threshold (a finite entropy in nats), "
                    f"got {self.threshold!r}"
                )
        elif self.threshold is not None:
            raise ValueError(
                f"{EGSPO_KEY_PREFIX}.threshold is only used with gate=threshold (gate is {self.gate!r}); "
                "set it to null or set gate=threshold"
            )


@dataclass
class HybridConfig(BaseConfig):
    """Hybrid SFT + RL training with expert demonstrations (``policy_loss.hybrid.*``, CHORD arXiv 2508.11408).

    ``L = (1 - mu) L_RL(rollout rows) + mu L_SFT(expert rows)`` (CHORD Eq. 3, with Eq. 6 for SFT-phi). ``mu``
    follows CHORD's schedule, computed once per step by the trainer from the 0-based step ``s``: a linear
    warm-up ``mu_peak * s / mu_warmup_steps`` for ``s < mu_warmup_steps``, a cosine decay from ``mu_peak`` to
    ``mu_valley`` over ``mu_decay_steps``, then ``mu_valley``. With no warm-up and no decay ``mu = mu_valley``
    throughout (CHORD-phi: 0.1). Expert rows come from ``data.expert`` (see ``docs/egspo.md``).

    Args:
        mu_peak, mu_valley: in [0, 1].
        mu_warmup_steps, mu_decay_steps: >= 0.
        sft_phi: ``true``: SFT-phi, each expert token's NLL weighted by ``sg(p (1 - p))`` (CHORD-phi);
            ``false``: plain token-mean NLL (CHORD-mu).
    """

    mu_peak: float = 0.1
    mu_valley: float = 0.1
    mu_warmup_steps: int = 0
    mu_decay_steps: int = 0
    sft_phi: bool = True

    def __post_init__(self) -> None:
        for key in ("mu_peak", "mu_valley"):
            value = getattr(self, key)
            if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{HYBRID_KEY_PREFIX}.{key} must be in [0, 1], got {value!r}")
        for key in ("mu_warmup_steps", "mu_decay_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{HYBRID_KEY_PREFIX}.{key} must be an integer >= 0, got {value!r}")
        if not isinstance(self.sft_phi, bool):
            raise ValueError(f"{HYBRID_KEY_PREFIX}.sft_phi must be true or false, got {self.sft_phi!r}")


def _coerce(value: Any, cls: type[BaseConfig], key: str) -> BaseConfig:
    """Turn a block's mapping into ``cls``, rejecting unknown keys (a ``_target_`` in it is ignored)."""
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
class PluginPolicyLossConfig(PolicyLossConfig):
    """veRL's :class:`PolicyLossConfig` plus the plugin's settings blocks, one field each (the field's name is the
    block's key under ``policy_loss``).

    ``policy_loss.loss_mode`` selects the loss (``espo``, ``egspo``, ``chord`` or any veRL loss); each loss
    reads the blocks its :class:`~verl_espo.loss_inputs.LossSpec` names (``config_blocks``) and ignores the others.
    """

    espo: ESPOConfig = field(default_factory=ESPOConfig)
    egspo: EGSPOConfig = field(default_factory=EGSPOConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    # The run's trainer settings, filled by interpolation in the plugin's *_algo.yaml (never set by hand), so that
    # a setting under which the loss's inputs cannot reach it fails in the driver's config validation, before Ray
    # starts. ``None`` when the config is built without a trainer config around it.
    run_trainer_mode: Optional[str] = None
    run_use_v1: Optional[bool] = None
    run_bypass_mode: Optional[bool] = None

    def __post_init__(self) -> None:
        # Every block (a field holding a config dataclass) is coerced from a plain mapping; BaseConfig freezes
        # fields once set, hence object.__setattr__.
        for f in dataclasses.fields(self):
            cls = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(cls, type) and issubclass(cls, BaseConfig):
                object.__setattr__(self, f.name, _coerce(getattr(self, f.name), cls, f"{POLICY_LOSS_KEY}.{f.name}"))
        self._check_run()

    def _check_run(self) -> None:
        from verl_espo.loss_inputs import loss_spec

        mode = self.loss_mode
        spec = loss_spec(mode)
        if spec is None or not spec.old_entropy:
            return
        needs = f"policy_loss.loss_mode={mode} needs the old policy's per-token entropy"
        if self.run_use_v1 is False:
            raise ValueError(
                f"{needs}, which veRL's legacy trainer drops: trainer.use_v1=false is not supported; set "
                "trainer.use_v1=true (veRL's default)"
            )
        if self.run_bypass_mode:
            raise ValueError(
                f"{needs}, which veRL computes in the old-log-prob pass that algorithm.rollout_correction.bypass_mode"
                "=true skips; set algorithm.rollout_correction.bypass_mode=false"
            )
        if self.run_trainer_mode is not None and self.run_trainer_mode not in PLUGIN_TRAINER_MODES:
            raise ValueError(
                f"{needs}, which only the plugin's trainer hands to the loss; trainer.v1.trainer_mode="
                f"{self.run_trainer_mode} cannot. Set trainer.v1.trainer_mode=plugin_sync (the default of "
                f"pkg://verl_espo.config/{mode}_trainer)"
            )
