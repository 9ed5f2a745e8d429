"""Bad data files are refused at start-up (``verl_espo.data.preflight``), each message naming the file, the row or
column, and the fix; the bundled toy data passes. Small parquet files in ``tmp_path``, the toy tokenizer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from verl_espo.data.preflight import DataPreflightError, check_data
from verl_espo.toy.task import write_dataset, write_expert_dataset


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from verl_espo.toy.assets import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def files(tmp_path):
    train, val = write_dataset(tmp_path / "data", n_train=32, n_val=8)
    expert, sft = write_expert_dataset(tmp_path / "data", n=16)
    return {"train": str(train), "val": str(val), "expert": str(expert), "sft": str(sft), "dir": tmp_path}


def _config(files, expert=None, **data):
    block = {
        "train_files": files["train"],
        "val_files": files["val"],
        "prompt_key": "prompt",
        "max_prompt_length": 16,
        "max_response_length": 16,
        "filter_overlong_prompts": False,
        "expert": {"files": expert, "batch_size": 4},
    }
    block.update(data)
    return OmegaConf.create({"data": block, "actor_rollout_ref": {"model": {"path": "unused"}}})


def _refused(config, tokenizer, *fragments):
    with pytest.raises(DataPreflightError) as info:
        check_data(config, tokenizer=tokenizer)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_parquet(path, index=False)
    return str(path)


def test_bundled_toy_data_passes(files, tokenizer):
    check_data(_config(files, expert=[files["expert"]]), tokenizer=tokenizer)
    check_data(_config(files, expert=[files["sft"]]), tokenizer=tokenizer)


def test_missing_file(files, tokenizer):
    missing = str(files["dir"] / "nope.parquet")
    _refused(_config(files, train_files=missing), tokenizer, "data.train_files", missing, "does not exist")
    _refused(_config(files, expert=[missing]), tokenizer, "data.expert.files", missing, "does not exist")


def test_not_parquet(files, tokenizer):
    path = files["dir"] / "train.parquet.txt"
    path.write_text("not parquet")
    _refused(_config(files, val_files=str(path)), tokenizer, "data.val_files", str(path), "not a readable parquet")


@pytest.mark.parametrize("column", ["prompt", "data_source", "reward_model"])
def test_missing_column(files, tokenizer, column):
    path = _write(pd.read_parquet(files["train"]).drop(columns=[column]), files["dir"] / "cut.parquet")
    _refused(_config(files, train_files=path), tokenizer, "data.train_files", path, f"['{column}']", "rl_row")


def test_missing_ground_truth(files, tokenizer):
    frame = pd.read_parquet(files["train"])
    truths = list(frame["reward_model"])
    truths[3] = {**truths[3], "ground_truth": None}
    frame["reward_model"] = truths
    path = _write(frame, files["dir"] / "no_truth.parquet")
    _refused(_config(files, train_files=path), tokenizer, path, "ground_truth", "row 3 (0-based)")


def test_empty_file(files, tokenizer):
    path = _write(pd.read_parquet(files["train"]).iloc[:0], files["dir"] / "empty.parquet")
    _refused(_config(files, train_files=path), tokenizer, "data.train_files", path, "has no rows")
    expert = _write(pd.read_parquet(files["expert"]).iloc[:0], files["dir"] / "empty_expert.parquet")
    _refused(_config(files, expert=[expert]), tokenizer, "data.expert.files", expert, "has no rows")


def test_overlong_prompt_with_filter_off(files, tokenizer):
    frame = pd.read_parquet(files["train"])
    frame.at[5, "prompt"] = [{"role": "user", "content": "1+2+3+4+5+6+7+8+9="}]
    path = _write(frame, files["dir"] / "long.parquet")
    message = _refused(_config(files, train_files=path), tokenizer, path, "row 5 (", "max_prompt_length=16",
                       "data.filter_overlong_prompts=true")  # fmt: skip
    assert "left-truncates" in message
    check_data(_config(files, train_files=path, filter_overlong_prompts=True), tokenizer=tokenizer)  # veRL drops it


def test_expert_file_without_prompt_or_messages(files, tokenizer):
    path = _write(pd.DataFrame({"question": ["1+1="], "answer": ["2"]}), files["dir"] / "odd.parquet")
    _refused(_config(files, expert=[path]), tokenizer, "data.expert.files", path, "`messages`", "['question', 'an")


def test_expert_file_without_responses(files, tokenizer):
    frame = pd.read_parquet(files["expert"])
    frame["extra_info"] = [{k: v for k, v in e.items() if k != "expert_response"} for e in frame["extra_info"]]
    path = _write(frame, files["dir"] / "no_response.parquet")
    _refused(_config(files, expert=[path]), tokenizer, "no row has an expert response", "data.expert.response_key")


def test_expert_response_over_budget(files, tokenizer):
    frame = pd.read_parquet(files["sft"])
    frame.at[2, "messages"] = [dict(frame.at[2, "messages"][0]), {"role": "assistant", "content": "\\boxed{1}" * 4}]
    path = _write(frame, files["dir"] / "long_response.parquet")
    _refused(_config(files, expert=[path]), tokenizer, "data.expert.files", path, "row 2 (", "max_response_length=16",
             "Raise data.max_response_length to")  # fmt: skip


def test_hydra_callback_stops_main_ppo_before_ray(files, tmp_path):
    """The callback in the smoke config ends ``main_ppo`` with the message before Ray starts."""
    missing = str(tmp_path / "missing.parquet")
    command = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path=pkg://verl_espo.config",
               "--config-name=espo_smoke", "actor_rollout_ref.model.path=unused", f"data.train_files={missing}",
               f"data.val_files={files['val']}", f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:  # the check did not stop it: end the run and whatever it started
                os.killpg(process.pid, signal.SIGKILL)
    proc = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"DataPreflightError: data.train_files: {missing} does not exist" in proc.stderr
    assert "ray init" not in proc.stdout
