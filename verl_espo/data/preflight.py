"""Start-up checks of a run's data files: bad data is refused before Ray starts, naming the file, row and fix.

veRL reads the training and validation parquet files inside its TaskRunner (a Ray actor) and the reward inputs
inside reward workers, so without these checks a bad file fails minutes into a run, or never fails: a prompt
longer than ``data.max_prompt_length`` with ``data.filter_overlong_prompts=false`` is left-truncated by veRL's
agent loop (``AgentLoopBase._cap_text_prompt_length``) and trains on a problem whose start is cut off.

:func:`check_data` refuses, each with a :class:`DataPreflightError` naming the file, the row or column and the fix:

* a training, validation or expert file that does not exist or is not a readable parquet file;
* a file with no rows;
* an RL file without the columns veRL reads: ``data.prompt_key`` (chat messages), ``data_source`` (the reward
  function's switch) and ``reward_model`` with a ``ground_truth`` (the naive reward manager reads
  ``reward_model["ground_truth"]`` of every row);
* an expert file (``data.expert.files``) without a prompt or ``messages`` column, or without any expert response
  (``data.expert.response_key`` column or ``extra_info`` key);
* with ``data.filter_overlong_prompts=false``: a prompt, RL or expert, longer than ``data.max_prompt_length``
  tokens (the chat template applied as veRL's own filter applies it);
* an expert response longer than ``data.max_response_length`` tokens (its end of turn included), which the
  trainer would otherwise cut.

Token lengths need the tokenizer: it is loaded from ``actor_rollout_ref.model.path`` when that is a local
directory or in the local Hugging Face cache; otherwise the length checks are skipped with a warning (the
structural checks still run). Remote paths (``hdfs://``, ``s3://``, ...) are skipped: veRL copies them to the
nodes itself.

:class:`DataPreflight` runs :func:`check_data` as a Hydra callback (``hydra.callbacks``), before ``main_ppo``
starts Ray; the plugin's algorithm configs (``plugin_loss``, listed by ``espo_algo``, ``egspo_algo``,
``chord_algo``) and the CPU smoke configs add it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from verl_espo.trainer.expert_data import EXPERT_DATA_KEY, ExpertDataConfig, ExpertDemonstrations

__all__ = ["DataPreflightError", "DataPreflight", "check_data", "check_rl_file", "check_expert_files", "load_tokenizer"]

logger = logging.getLogger(__name__)

#: Rows named in a message (the count of all offending rows is given as well).
SHOWN_ROWS = 5


class DataPreflightError(ValueError):
    """A data file the run cannot train on; the message names the file, the row or column, and the fix."""


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _remote(path: str) -> bool:
    return "://" in path


def _rows_text(rows: Sequence[int], detail: Optional[Mapping[int, Any]] = None) -> str:
    shown = ", ".join(f"{r} ({detail[r]})" if detail else str(r) for r in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more} (0-based)"


def _open_parquet(path: str, key: str) -> list[str]:
    """The column names of parquet file ``path`` (``key`` names the setting that points at it)."""
    if not os.path.exists(path):
        raise DataPreflightError(
            f"{key}: {path} does not exist. Fix the path (prepare the data with python -m verl_espo.data <name> "
            "--out DIR) or point the key at an existing file"
        )
    try:
        schema = pq.read_schema(path)
    except Exception as err:
        raise DataPreflightError(
            f"{key}: {path} is not a readable parquet file ({type(err).__name__}: {err}). veRL reads data files as "
            "parquet; write it with pandas.DataFrame.to_parquet"
        ) from err
    return list(schema.names)


def _prompt_lengths(tokenizer: Any, prompts: Sequence[Any], template_kwargs: Mapping[str, Any]) -> list[int]:
    """Prompt token counts as veRL's ``RLHFDataset.maybe_filter_out_long_prompts`` computes them."""
    kwargs = {k: v for k, v in template_kwargs.items() if k not in ("tokenize", "return_dict", "return_tensors")}
    lengths = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, **kwargs)
        if isinstance(ids, Mapping):  # BatchEncoding from newer transformers
            ids = ids["input_ids"]
        lengths.append(len(ids))
    return lengths


def _overlong_prompt_error(key: str, path: str, rows: list[int], lengths: Mapping[int, int], limit: int) -> str:
    return (
        f"{key}: {path} has {len(rows)} prompt(s) longer than data.max_prompt_length={limit} tokens: "
        f"{_rows_text(rows, {r: f'{lengths[r]} tokens' for r in rows})}. With data.filter_overlong_prompts=false "
        "veRL's agent loop left-truncates them, cutting off the start of the problem. Set "
        f"data.filter_overlong_prompts=true (drops them), raise data.max_prompt_length to {max(lengths.values())}, "
        "or remove these rows"
    )


def check_rl_file(
    path: str,
    key: str,
    *,
    prompt_key: str = "prompt",
    tokenizer: Any = None,
    max_prompt_length: Optional[int] = None,
    template_kwargs: Optional[Mapping[str, Any]] = None,
) -> int:
    """Check one RL parquet file (training or validation); returns its row count.

    ``key`` names the setting for messages (``data.train_files``). Prompt lengths are checked when ``tokenizer``
    and ``max_prompt_length`` are given (i.e. with ``data.filter_overlong_prompts=false``).
    """
    columns = _open_parquet(path, key)
    missing = [c for c in (prompt_key, "data_source", "reward_model") if c not in columns]
    if missing:
        raise DataPreflightError(
            f"{key}: {path} lacks column(s) {missing} that veRL reads (its columns are {columns}). An RL row is "
            "{data_source: str, " + prompt_key + ": [{role, content}, ...], reward_model: {ground_truth: str}, "
            "extra_info: {...}} (verl_espo/data/common.py, rl_row); prepare the file with python -m verl_espo.data "
            "<name> --out DIR" + (", or set data.prompt_key to the prompt column" if prompt_key in missing else "")
        )
    frame = pd.read_parquet(path, columns=[prompt_key, "reward_model"])
    if len(frame) == 0:
        raise DataPreflightError(f"{key}: {path} has no rows. Point {key} at a file with data")
    no_truth = [i for i, rm in enumerate(frame["reward_model"])
                if not isinstance(rm, Mapping) or rm.get("ground_truth") is None]  # fmt: skip
    if no_truth:
        raise DataPreflightError(
            f"{key}: {path} has no reward_model.ground_truth in {_rows_text(no_truth)}; veRL's reward manager reads "
            "reward_model['ground_truth'] of every row. Fill it in (a string) or remove these rows"
        )
    not_chat = [i for i, p in enumerate(frame[prompt_key]) if isinstance(p, (str, bytes)) or not _is_chat(p)]
    if not_chat:
        raise DataPreflightError(
            f"{key}: {path} column `{prompt_key}` is not a list of chat messages ({{role, content}}) in "
            f"{_rows_text(not_chat)}; veRL applies the chat template to it. Write prompts as "
            "[{'role': 'user', 'content': ...}] (verl_espo/data/common.py, rl_row)"
        )
    if tokenizer is not None and max_prompt_length is not None:
        lengths = _prompt_lengths(tokenizer, frame[prompt_key], template_kwargs or {})
        over = [i for i, n in enumerate(lengths) if n > max_prompt_length]
        if over:
            raise DataPreflightError(
                _overlong_prompt_error(key, path, over, {i: lengths[i] for i in over}, max_prompt_length)
            )
    return len(frame)


def _is_chat(prompt: Any) -> bool:
    try:
        messages = list(prompt)
    except TypeError:
        return False
    return bool(messages) and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages)


def check_expert_files(
    config: ExpertDataConfig,
    *,
    prompt_key: str = "prompt",
    tokenizer: Any = None,
    max_prompt_length: Optional[int] = None,
    max_response_length: Optional[int] = None,
    template_kwargs: Optional[Mapping[str, Any]] = None,
) -> int:
    """Check the expert demonstration files of ``data.expert``; returns the number of usable rows.

    With a ``tokenizer``, every row is tokenised as the trainer tokenises it
    (:meth:`~verl_espo.trainer.expert_data.ExpertDemonstrations.encode`) and a response longer than
    ``max_response_length`` is refused, as is a prompt longer than ``max_prompt_length`` when that is given.
    """
    key = f"{EXPERT_DATA_KEY}.files"
    if any(_remote(path) for path in config.files or []):
        return 0  # veRL's nodes read remote files; the trainer checks them when it loads them
    for path in config.files or []:
        _open_parquet(path, key)
        if pq.ParquetFile(path).metadata.num_rows == 0:
            raise DataPreflightError(f"{key}: {path} has no rows. Point {key} at a file of demonstrations")
    try:
        demos = ExpertDemonstrations(config, tokenizer, max_prompt_length or 0, max_response_length or 0,
                                     prompt_key=prompt_key, chat_template_kwargs=template_kwargs)  # fmt: skip
    except ValueError as err:
        raise DataPreflightError(str(err)) from err
    if tokenizer is None:
        return len(demos)
    long_prompts: dict[tuple[str, int], int] = {}
    long_responses: dict[tuple[str, int], int] = {}
    for index, origin in enumerate(demos.origins):
        _, prompt_ids, response_ids = demos.encode(index)
        if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
            long_prompts[origin] = len(prompt_ids)
        if max_response_length is not None and len(response_ids) > max_response_length:
            long_responses[origin] = len(response_ids)
    for found, what in ((long_prompts, "prompt"), (long_responses, "response")):
        if not found:
            continue
        path = next(iter(found))[0]
        rows = [r for (p, r) in found if p == path]
        lengths = {r: n for (p, r), n in found.items() if p == path}
        if what == "prompt":
            raise DataPreflightError(_overlong_prompt_error(key, path, rows, lengths, int(max_prompt_length)))
        shown = _rows_text(rows, {r: f"{lengths[r]} tokens" for r in rows})
        raise DataPreflightError(
            f"{key}: {path} has {len(found)} expert response(s) longer than data.max_response_length="
            f"{max_response_length} tokens (end of turn included): {shown}. The trainer would cut them, training "
            "the model to stop mid-solution. Raise data.max_response_length to "
            f"{max(found.values())}, or remove these rows"
        )
    return len(demos)


def load_tokenizer(config: DictConfig) -> Any:
    """The tokenizer of ``actor_rollout_ref.model.path`` if it is on this machine, else ``None`` (with a warning)."""
    model = OmegaConf.select(config, "actor_rollout_ref.model", default=None) or {}
    path = model.get("tokenizer_path", None) or model.get("path", None)
    if not path or _remote(str(path)):
        return None
    from transformers import AutoTokenizer

    trust = bool(model.get("trust_remote_code", False))
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust, local_files_only=True)
    except Exception as err:  # a hub id that is not cached here, a path that is not a model, ...
        logger.warning("verl-espo data checks: no tokenizer for %s on this machine (%s); token lengths are not "
                       "checked before start-up", path, type(err).__name__)  # fmt: skip
        return None


def check_data(config: DictConfig, tokenizer: Any = "auto") -> None:
    """Raise :class:`DataPreflightError` for data files this run cannot train on (module docstring).

    ``tokenizer="auto"`` loads it with :func:`load_tokenizer`; ``None`` skips the token-length checks.
    """
    data = config.data
    prompt_key = str(data.get("prompt_key", None) or "prompt")
    filter_overlong = bool(data.get("filter_overlong_prompts", True))
    max_prompt = int(data.max_prompt_length)
    max_response = int(data.max_response_length)
    template_kwargs = data.get("apply_chat_template_kwargs", None) or {}
    if OmegaConf.is_config(template_kwargs):
        template_kwargs = OmegaConf.to_container(template_kwargs, resolve=True)
    block = data.get("expert", None)
    expert = ExpertDataConfig.from_mapping(OmegaConf.to_container(block, resolve=True) if block is not None else None)
    if tokenizer == "auto":
        tokenizer = load_tokenizer(config) if (not filter_overlong or expert.enabled) else None
    for key in ("train_files", "val_files"):
        files = _files(data.get(key, None))
        if key == "train_files" and not files:
            raise DataPreflightError("data.train_files is empty; set it to the training parquet file(s)")
        for path in files:
            if _remote(path):
                continue
            check_rl_file(path, f"data.{key}", prompt_key=prompt_key,
                          tokenizer=None if filter_overlong else tokenizer,
                          max_prompt_length=None if filter_overlong else max_prompt,
                          template_kwargs=template_kwargs)  # fmt: skip
    if expert.enabled:
        check_expert_files(expert, prompt_key=prompt_key, tokenizer=tokenizer,
                           max_prompt_length=None if filter_overlong else max_prompt,
                           max_response_length=max_response, template_kwargs=template_kwargs)  # fmt: skip


try:  # Hydra is a dependency of the plugin; the callback class is only needed where Hydra runs
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class DataPreflight(_HydraCallback):
    """Hydra callback: :func:`check_data` on the composed config, before the task (and Ray) starts.

    Configured as ``hydra.callbacks.verl_espo_data._target_: verl_espo.data.preflight.DataPreflight``. The
    plugin's config checks (:func:`~verl_espo.trainer.checks.check_trainer_config`, which the trainer repeats)
    run first, so a bad setting is named before the data it points at is read. Hydra turns an exception raised
    by a callback into a warning, so a refusal ends the process with ``SystemExit`` (exit status 1, the message
    on stderr).
    """

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        from verl_espo.trainer.checks import check_trainer_config

        try:
            check_trainer_config(config)
            check_data(config)
        except ValueError as err:
            raise SystemExit(f"verl-espo: {type(err).__name__}: {err}") from err
