"""Run settings from the Hydra config: the headline settings of every run, and the keys whose values differ."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from typing import Any

from verl_espo.report.runs import Run

__all__ = ["HEADLINE_SETTINGS", "DEFAULT_IGNORED", "differing_settings", "flatten", "headline_settings"]

#: (label, dotted config key): the settings a paper's setup table states, shown for every run.
HEADLINE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("model", "actor_rollout_ref.model.path"),
    ("policy loss", "actor_rollout_ref.actor.policy_loss.loss_mode"),
    ("advantage", "algorithm.adv_estimator"),
    ("prompts / step", "data.train_batch_size"),
    ("responses / prompt", "actor_rollout_ref.rollout.n"),
    ("mini-batch", "actor_rollout_ref.actor.ppo_mini_batch_size"),
    ("lr", "actor_rollout_ref.actor.optim.lr"),
    ("clip low / high", "actor_rollout_ref.actor.clip_ratio_low|actor_rollout_ref.actor.clip_ratio_high"),
    ("max response", "data.max_response_length"),
    ("temperature", "actor_rollout_ref.rollout.temperature"),
    ("val n / temperature", "actor_rollout_ref.rollout.val_kwargs.n|actor_rollout_ref.rollout.val_kwargs.temperature"),
    ("steps", "trainer.total_training_steps"),
)

#: keys left out of the "settings that differ" table by default: where each run writes its files.
DEFAULT_IGNORED: tuple[str, ...] = ("trainer.default_local_dir", "*_data_dir", "*.tensorboard_dir")


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values (compared whole)."""
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not config and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: config}


def format_value(value: Any, width: int = 60) -> str:
    """A setting as table text: JSON-like for containers, shortened in the middle past ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width // 2) :]


def headline_settings(run: Run) -> dict[str, str]:
    """:data:`HEADLINE_SETTINGS` of one run (``-`` where unset; empty without a config)."""
    if run.config is None:
        return {}
    flat = flatten(run.config)
    out = {}
    for label, keys in HEADLINE_SETTINGS:
        values = [flat.get(key) for key in keys.split("|")]
        out[label] = " / ".join("-" if v is None else format_value(v, 40) for v in values)
    return out


_MISSING = object()


def differing_settings(runs: Sequence[Run], ignore: Sequence[str] = DEFAULT_IGNORED) -> dict[str, list[Any]]:
    """Config keys whose value is not the same in every run that has a config (``fnmatch`` patterns in ``ignore``).

    Returns ``key -> [value per run]`` over the runs with a config, in run order; a key absent from a run's
    config shows as ``"(unset)"``. Empty when fewer than two runs have a config.
    """
    flats = [flatten(run.config) for run in runs if run.config is not None]
    if len(flats) < 2:
        return {}
    keys = sorted(set().union(*flats))
    diff = {}
    for key in keys:
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore):
            continue
        values = [flat.get(key, _MISSING) for flat in flats]
        if any(v != values[0] for v in values[1:]):
            diff[key] = ["(unset)" if v is _MISSING else v for v in values]
    return diff
