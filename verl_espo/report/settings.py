"""Run settings from the Hydra config: the headline settings of every run, and the keys whose values differ."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from verl_espo.report.runs import Run

__all__ = ["HEADLINE_SETTINGS", "DEFAULT_IGNORED", "differing_settings", "flatten", "headline_settings", "shown_path"]

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


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``pandas.json_normalize``); lists are values (compared whole)."""
    return pd.json_normalize(config, sep=".").iloc[0].to_dict() if config else {}


def shown_path(path: str | Path) -> str:
    """An absolute path as the report shows it: relative to the working directory when inside it, else its
    name (so that a report made on one machine names no folder of it); other text unchanged."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name


def format_value(value: Any, width: int = 60) -> str:
    """A setting as table text: JSON-like for containers, shortened in the middle past ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width // 2) :]


#: settings shown with :func:`shown_path` (machine paths)
PATH_SETTINGS = ("actor_rollout_ref.model.path",)


def headline_settings(run: Run) -> dict[str, str]:
    """:data:`HEADLINE_SETTINGS` of one run (``-`` where unset; empty without a config)."""
    if run.config is None:
        return {}
    flat = flatten(run.config)
    flat.update({key: shown_path(flat[key]) for key in PATH_SETTINGS if isinstance(flat.get(key), str)})
    out = {}
    for label, keys in HEADLINE_SETTINGS:
        values = [flat.get(key) for key in keys.split("|")]
        out[label] = " / ".join("-" if v is None else format_value(v, 40) for v in values)
    return out


def differing_settings(runs: Sequence[Run], ignore: Sequence[str] = DEFAULT_IGNORED) -> pd.DataFrame:
    """Config keys whose value is not the same in every run that has a config (``fnmatch`` patterns in ``ignore``).

    One row per key (sorted), one column per run with a config, in run order; cells are the values as
    table text (:func:`format_value` at full width), compared as that text; ``"(unset)"`` where a run's
    config lacks the key.
    Empty when fewer than two runs have a config.
    """
    with_config = [run for run in runs if run.config is not None]
    if len(with_config) < 2:
        return pd.DataFrame()
    texts = pd.DataFrame(
        [{key: format_value(value, width=10**9) for key, value in flatten(run.config).items()} for run in with_config],
        index=[run.name for run in with_config],
    ).fillna("(unset)")
    keep = [key for key in texts.columns if not any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)]
    texts = texts[sorted(keep)]
    return texts.loc[:, texts.nunique() > 1].T
