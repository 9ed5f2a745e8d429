"""The bundled toy assets and task: dataset schema and determinism, tokenizer, built model (no downloads)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pandas as pd
import pytest
import torch

from verl_espo.rewards.math import compute_score
from verl_espo.toy.assets import CHAT_TEMPLATE, build_assets, build_tokenizer
from verl_espo.toy.task import DATA_SOURCE, Problem, all_problems, make_row, sample_problems, write_dataset
from verl_espo.toy.warmup import chat_prompt, warmup_example


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The bundled default assets, loaded back with the Auto classes as veRL loads them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_assets(tmp_path_factory.mktemp("toy_assets"))
    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("toy_tokenizer")
    build_tokenizer(path)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return AutoTokenizer.from_pretrained(path)


# --- task -------------------------------------------------------------------------------------------


def test_problem_space():
    problems = all_problems()
    assert len(problems) == 55 and len(set(problems)) == 55
    assert all(p.op == "+" and 0 <= p.answer <= 9 for p in problems)
    assert Problem(3, "+", 4).prompt == "3+4=" and Problem(3, "+", 4).ground_truth == "7"
    assert Problem(9, "-", 4).answer == 5 and len(all_problems(("+", "-"))) == 110


def test_sampling_is_deterministic_and_answer_uniform():
    assert sample_problems(50, seed=3) == sample_problems(50, seed=3)
    assert sample_problems(50, seed=3) != sample_problems(50, seed=4)
    problems = sample_problems(5000, seed=0)
    assert set(problems) == set(all_problems())
    counts = Counter(p.answer for p in problems)
    assert all(400 <= counts[d] <= 600 for d in range(10)), counts  # uniform answers: 500 each
    mixed = sample_problems(2000, seed=0, ops=("+", "-"))
    assert {p.op for p in mixed} == {"+", "-"} and all(0 <= p.answer <= 9 and p.a <= 9 for p in mixed)


def test_row_schema():
    row = make_row(Problem(2, "+", 5), "train", 3)
    assert row == {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": "2+5="}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "7"},
        "extra_info": {"split": "train", "index": 3},
    }
    assert compute_score(row["data_source"], r"\boxed{7}", row["reward_model"]["ground_truth"])["acc"]


def test_write_dataset(tmp_path):
    train_path, val_path = write_dataset(tmp_path / "a", n_train=40, n_val=12, seed=7)
    train, val = pd.read_parquet(train_path), pd.read_parquet(val_path)
    assert (len(train), len(val)) == (40, 12)
    assert list(train.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    for split, df in (("train", train), ("val", val)):
        assert (df.data_source == DATA_SOURCE).all() and (df.ability == "math").all()
        assert [e["split"] for e in df.extra_info] == [split] * len(df)
        assert [e["index"] for e in df.extra_info] == list(range(len(df)))
        for prompt, rm in zip(df.prompt, df.reward_model):
            assert len(prompt) == 1 and prompt[0]["role"] == "user"
            a, b = map(int, re.fullmatch(r"(\d)\+(\d)=", prompt[0]["content"]).groups())
            assert rm["style"] == "rule" and rm["ground_truth"] == str(a + b)
    again = write_dataset(tmp_path / "b", n_train=40, n_val=12, seed=7)
    pd.testing.assert_frame_equal(train, pd.read_parquet(again[0]))
    pd.testing.assert_frame_equal(val, pd.read_parquet(again[1]))
    other = pd.read_parquet(write_dataset(tmp_path / "c", n_train=40, n_val=12, seed=8)[0])
    assert not train.prompt.equals(other.prompt)


def test_verl_rl_dataset_reads_it(tmp_path, tokenizer):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    train_path, _ = write_dataset(tmp_path, n_train=8, n_val=2, seed=0)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 16, "filter_overlong_prompts": True})
    dataset = RLHFDataset(data_files=[str(train_path)], tokenizer=tokenizer, config=config)
    assert len(dataset) == 8
    item = dataset[0]
    assert item["data_source"] == DATA_SOURCE and item["raw_prompt"][0]["role"] == "user"


def test_warmup_examples_teach_no_arithmetic():
    """Echo prompts hold one number; task prompts get a digit drawn independently of the problem."""
    rng = random.Random(0)
    examples = [warmup_example(rng) for _ in range(4000)]
    echo = [(c, r) for c, r in examples if re.fullmatch(r"\d=", c)]
    task = [(c, r) for c, r in examples if "+" in c]
    assert len(echo) + len(task) == len(examples) and 1800 < len(echo) < 2200
    assert all(r == f"\\boxed{{{c[0]}}}" for c, r in echo)
    correct = sum(compute_score(DATA_SOURCE, r, str(Problem(int(c[0]), "+", int(c[2])).answer))["acc"] for c, r in task)
    assert 0.07 < correct / len(task) < 0.13  # chance level: 1 in 10


# --- tokenizer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["3+4=", r"\boxed{7}", " a  b \n\n\tc ~ ", "Hello, World!\n(x^2 - 1) / {y}"])
def test_tokenizer_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text


def test_tokenizer_specials_and_chat_template(tokenizer):
    assert type(tokenizer).__name__.startswith("Qwen2Tokenizer")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id and tokenizer.bos_token is None
    assert tokenizer.chat_template == CHAT_TEMPLATE
    prompt = chat_prompt(tokenizer, "3+4=")
    assert prompt == "<|user|>3+4=<|im_end|>\n<|assistant|>"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    assert len(ids) == 8
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "<|user|>"
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1="},
        {"role": "assistant", "content": r"\boxed{2}"},
    ]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert text == "<|system|>Be brief.<|im_end|>\n<|user|>1+1=<|im_end|>\n<|assistant|>\\boxed{2}<|im_end|>\n"
    full = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(full, skip_special_tokens=True) == "Be brief.\n1+1=\n\\boxed{2}\n"


# --- built assets -----------------------------------------------------------------------------------------


def test_build_assets_loads_and_generates(assets):
    path, tokenizer, model = assets
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    record = json.loads((path / "toy_assets.json").read_text())
    assert record["warmup"]["steps"] > 0 and record["num_parameters"] == model.num_parameters()
    prompt = tokenizer(chat_prompt(tokenizer, "3+4="), return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **prompt,
        max_new_tokens=16,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        num_return_sequences=4,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert out.shape[0] == 4 and out.shape[1] > prompt["input_ids"].shape[1]


def greedy(model, tokenizer, content: str) -> str:
    prompt = tokenizer(chat_prompt(tokenizer, content), return_tensors="pt", add_special_tokens=False)
    out = model.generate(**prompt, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])


def test_warmed_up_model_has_the_format_but_not_the_arithmetic(assets):
    _, tokenizer, model = assets
    responses = {p: greedy(model, tokenizer, p.prompt) for p in all_problems()}
    formatted = [r for r in responses.values() if re.fullmatch(r"\\boxed\{\d\}<\|im_end\|>", r)]
    assert len(formatted) >= 0.9 * len(responses), responses
    correct = sum(
        compute_score(DATA_SOURCE, r.removesuffix("<|im_end|>"), p.ground_truth)["acc"] for p, r in responses.items()
    )
    assert correct / len(responses) < 0.35  # near chance (0.1): RL has the rest to learn
    assert greedy(model, tokenizer, "7=") == "\\boxed{7}<|im_end|>"  # the echo half of the warm-up


def test_build_assets_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = build_assets(tmp_path / "a", warmup_steps=5, seed=3)
    b = build_assets(tmp_path / "b", warmup_steps=5, seed=3)
    c = build_assets(tmp_path / "c", warmup_steps=5, seed=4)
    wa, wb, wc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_build_assets_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_assets(tmp_path, warmup_steps=0)
    assert torch.equal(torch.rand(3), expected)
