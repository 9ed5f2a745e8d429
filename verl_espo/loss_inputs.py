"""What the rest of the plugin knows about a policy loss: its :class:`LossSpec`.

A plugin loss is declared in its math module under :mod:`verl_espo.core` (:func:`register_loss_spec`), which is
free of veRL, and registered in veRL's policy-loss registry (``@register_policy_loss(name)``) by its module under
:mod:`verl_espo.losses`, which reads its settings through the spec. The spec says which config blocks the loss
reads, which inputs it needs from the plugin's trainer (the old policy's entropy, a step-level entropy threshold and
the config key that turns it on, other step statistics, expert rows), its metric prefix, the metrics summed rather
than averaged over micro-batches, its label and plots in reports and its columns on the console. The trainer, its
start-up checks, the actor loss, the config validation, the runner, smoke/compare and the report read the spec
through :func:`loss_spec` / :func:`loss_specs`, and hold no table of losses of their own.

This module also holds the channel through which the plugin's actor loss hands those inputs to a policy loss
(veRL's ``ppo_loss`` calls a registered loss with a fixed set of arguments): the actor loss calls veRL's own
``ppo_loss`` inside :func:`policy_loss_extras`, and the loss reads them with :func:`loss_input`.

It imports neither veRL nor the losses at import time; :func:`loss_spec` imports the modules of
:mod:`verl_espo.core` on first use, so reading the specs (the runner's console line, the report, the comparison's
labels) never imports veRL.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Optional

__all__ = [
    "LossPlot",
    "StepThreshold",
    "StepStatistic",
    "LossSpec",
    "register_loss_spec",
    "loss_spec",
    "loss_specs",
    "step_threshold_ratio",
    "step_statistics",
    "MissingLossInputError",
    "missing_old_entropy_message",
    "policy_loss_extras",
    "current_extras",
    "loss_input",
]


@dataclass(frozen=True)
class LossPlot:
    """One curve of the report's training figures (:mod:`verl_espo.report.figures` has the same fields)."""

    file: str  # PNG name without the extension
    panel: str  # panel title
    ylabel: str  # y-axis label, with the unit
    key: str  # veRL metric name
    label: str = ""  # the curve's name when a panel has several


#: The inputs the plugin's actor loss hands every declared loss (:func:`loss_input`), besides its step statistics.
_TRAINER_INPUTS = ("old_entropy", "entropy_threshold", "expert_mask", "mu", "hybrid_counts")


def _switched_on(policy_loss: Mapping[str, Any], block: str, key: str, value: Any) -> bool:
    """Whether ``policy_loss.<block>.<key> == value`` (``True`` without a ``block``)."""
    if not block:
        return True
    settings = policy_loss.get(block, None)
    return settings is not None and settings.get(key, None) == value


@dataclass(frozen=True)
class StepThreshold:
    """A step-level entropy threshold the trainer computes once per step over the rollout tokens, when
    ``policy_loss.<block>.<key> == <value>``, at the share ``policy_loss.<block>.<ratio_key>``."""

    block: str
    key: str
    value: str = "batch"
    ratio_key: str = "high_entropy_ratio"


#: ``compute(policy_loss, tensors, rollout_mask, entropy_threshold) -> float`` of a :class:`StepStatistic`.
StepStatisticFn = Callable[[Any, Mapping[str, Any], Any, Optional[float]], float]


@dataclass(frozen=True)
class StepStatistic:
    """A value the plugin's trainer computes once per step, before the actor update, over the step's rollout tokens,
    and hands to every micro-batch and rank as the loss input ``name`` (:func:`loss_input`).

    The trainer computes it when ``policy_loss.<block>.<key> == value`` (always when ``block`` is empty) as
    ``compute(policy_loss, tensors, rollout_mask, entropy_threshold)``: the typed ``policy_loss`` config, the step's
    batch ``fields`` as padded ``(B, T)`` tensors by name (veRL's names: ``entropy`` is the old policy's entropy,
    ``old_log_probs``), the ``(B, T)`` bool mask of its rollout tokens (expert rows left out) and the step's entropy
    threshold (``None`` unless the spec's ``step_threshold`` is on). It travels as the non-tensor batch data
    :meth:`LossSpec.statistic_key` and is logged as :meth:`LossSpec.statistic_metric`.
    """

    name: str
    compute: StepStatisticFn
    fields: tuple[str, ...] = ()
    block: str = ""
    key: str = ""
    value: Any = None


@dataclass(frozen=True)
class LossSpec:
    """What the plugin needs to know about one registered policy loss.

    Attributes:
        name: the ``policy_loss.loss_mode`` it is registered under in veRL.
        label: its name in reports and comparisons.
        config_blocks: the ``policy_loss.<block>`` settings it reads (blocks of
            :class:`~verl_espo.config.PluginPolicyLossConfig`); empty: it reads veRL's keys only.
        old_entropy: it needs the old policy's per-token entropy (veRL's old-log-prob pass).
        step_threshold: the step-level entropy threshold it may need, and the key that turns it on.
        step_statistics: other values it needs computed once per step over the whole step (:class:`StepStatistic`).
        expert_rows: it trains on expert-demonstration rows (``data.expert``) mixed into the step.
        metric_prefix: the prefix of its own metrics (``actor/<name>/``); the actor loss logs the old entropy there.
        sum_metrics: metrics normalised like the loss itself, summed over micro-batches and ranks (as veRL sums
            ``actor/pg_loss``) instead of averaged.
        plots: its curves in the report's training figures.
        columns: its ``(label, metric key)`` columns in the runner's per-step console line.
    """

    name: str
    label: str
    config_blocks: tuple[str, ...] = ()
    old_entropy: bool = False
    step_threshold: Optional[StepThreshold] = None
    step_statistics: tuple[StepStatistic, ...] = ()
    expert_rows: bool = False
    metric_prefix: str = ""
    sum_metrics: frozenset[str] = frozenset()
    plots: tuple[LossPlot, ...] = field(default=())
    columns: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.metric_prefix:
            object.__setattr__(self, "metric_prefix", f"actor/{self.name}/")
        if not self.metric_prefix.endswith("/"):
            raise ValueError(f"LossSpec {self.name!r}: metric_prefix must end with '/', got {self.metric_prefix!r}")
        switches = [("step threshold", self.step_threshold)] if self.step_threshold is not None else []
        switches += [(f"step statistic {stat.name!r}", stat) for stat in self.step_statistics if stat.block]
        for what, switch in switches:
            if switch.block not in self.config_blocks:
                raise ValueError(
                    f"LossSpec {self.name!r}: the {what}'s block {switch.block!r} is not among its config_blocks "
                    f"{list(self.config_blocks)}"
                )
        names = [stat.name for stat in self.step_statistics]
        if len(set(names)) != len(names) or set(names) & set(_TRAINER_INPUTS):
            raise ValueError(
                f"LossSpec {self.name!r}: step statistic names must be unique and none of {list(_TRAINER_INPUTS)}, "
                f"got {names}"
            )

    def statistic_key(self, statistic: StepStatistic) -> str:
        """The non-tensor batch key under which the trainer hands ``statistic`` to the actor loss."""
        return f"{self.name}_{statistic.name}"

    def statistic_metric(self, statistic: StepStatistic) -> str:
        """The metric under which the trainer logs ``statistic``."""
        return f"{self.metric_prefix}step_{statistic.name}"


_SPECS: dict[str, LossSpec] = {}


def register_loss_spec(spec: LossSpec) -> LossSpec:
    """Declare ``spec`` (in the loss's math module); a second, different spec under one name is refused."""
    known = _SPECS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"a different LossSpec is already registered for loss_mode={spec.name!r}")
    _SPECS[spec.name] = spec
    return spec


@functools.cache
def _load_plugin_specs() -> None:
    """Import every module of :mod:`verl_espo.core`: those of the plugin's losses declare their specs."""
    core = importlib.import_module("verl_espo.core")
    for module in pkgutil.iter_modules(core.__path__, prefix=f"{core.__name__}."):
        importlib.import_module(module.name)


def loss_spec(loss_mode: Optional[str]) -> Optional[LossSpec]:
    """The spec of ``loss_mode``, or ``None`` for a loss the plugin does not declare (veRL's own losses)."""
    if loss_mode not in _SPECS:
        _load_plugin_specs()
    return _SPECS.get(loss_mode)


def loss_specs() -> Mapping[str, LossSpec]:
    """Every declared loss, by name in alphabetical order (declaration order depends on the import chain)."""
    _load_plugin_specs()
    return MappingProxyType(dict(sorted(_SPECS.items())))


def step_threshold_ratio(policy_loss: Mapping[str, Any]) -> Optional[float]:
    """``rho`` of the step-level entropy threshold the configured loss needs (its spec's ``step_threshold`` is
    switched on in ``policy_loss``), or ``None`` if it needs none."""
    spec = loss_spec(policy_loss.get("loss_mode", "vanilla"))
    wanted = spec.step_threshold if spec is not None else None
    if wanted is None or not _switched_on(policy_loss, wanted.block, wanted.key, wanted.value):
        return None
    return float(policy_loss.get(wanted.block).get(wanted.ratio_key))


def step_statistics(policy_loss: Mapping[str, Any]) -> tuple[StepStatistic, ...]:
    """The step statistics of the configured loss that ``policy_loss`` switches on (empty for an undeclared loss)."""
    spec = loss_spec(policy_loss.get("loss_mode", "vanilla"))
    if spec is None:
        return ()
    return tuple(s for s in spec.step_statistics if _switched_on(policy_loss, s.block, s.key, s.value))


# ----------------------------------------------------------------------------- errors
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


# ----------------------------------------------------------------------------- the channel
_EXTRAS: ContextVar[Mapping[str, Any]] = ContextVar("verl_espo_policy_loss_extras", default=MappingProxyType({}))


@contextmanager
def policy_loss_extras(**extras: Any) -> Iterator[None]:
    """Make ``extras`` (e.g. ``old_entropy=...``) visible to policy losses called inside the block."""
    token = _EXTRAS.set(MappingProxyType(dict(extras)))
    try:
        yield
    finally:
        _EXTRAS.reset(token)


def current_extras() -> Mapping[str, Any]:
    """The extras of the innermost :func:`policy_loss_extras` block (empty outside one)."""
    return _EXTRAS.get()


def loss_input(name: str, given: Any = None) -> Any:
    """``given`` when the caller passed it, else the actor loss's extra ``name`` (``None`` when neither has it)."""
    return current_extras().get(name) if given is None else given
