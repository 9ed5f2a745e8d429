"""Data preparation (``verl_espo.data``) on the in-repo samples: parsing, answer extraction, selection, CLI, veRL I/O.

No network: every converter runs on a ``datasets.Dataset`` built from ``verl_espo/data/samples/``, and the CLI tests
replace each module's ``load_hf`` with the sample loader (checking the Hugging Face id and split it asks for).
Expected values are read off the sample rows by hand.
"""

from __future__ import annotations

import importlib

import pandas as pd
import pytest

from verl_espo.data import (
    DATASETS,
    aime2024,
    aime2025,
    amc2023,
    dapo_math,
    get_spec,
    gsm8k,
    hmmt_feb2025,
    math500,
    openr1_math,
    simplerl_zoo,
)
from verl_espo.data import __main__ as data_main
from verl_espo.data.common import (
    CHORD_TEMPLATE,
    ESPO_TEMPLATE,
    PromptTemplate,
    get_template,
    load_sample,
    normalize_ground_truth,
    run_cli,
    seeded_subset,
)
from verl_espo.data.openr1_math import ChordSplit, expert_pool, has_cjk, is_integer_answer, select

RL_COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]


def check_rl_rows(ds, name: str, split: str, template: PromptTemplate = ESPO_TEMPLATE) -> list[str]:
    """veRL's RL schema, with the template's messages; returns the ground truths."""
    assert ds.column_names == RL_COLUMNS
    for i, row in enumerate(ds):
        assert row["data_source"] == name and row["ability"] == "math"
        assert row["reward_model"]["style"] == "rule" and isinstance(row["reward_model"]["ground_truth"], str)
        info = row["extra_info"]
        assert info["split"] == split and info["index"] == i and info["problem"]
        assert row["prompt"] == template.messages(info["problem"])
    return [row["reward_model"]["ground_truth"] for row in ds]


# --- templates and helpers ------------------------------------------------------------------------


def test_templates():
    problem = r"Find $\{x\}$ if $x = 1$."  # braces in a problem are kept (no str.format)
    assert ESPO_TEMPLATE.messages(problem) == [
        {
            "role": "user",
            "content": problem + "\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]
    system, user = CHORD_TEMPLATE.messages(problem)
    assert system["role"] == "system" and "\\boxed{}" in system["content"] and "<think>" in system["content"]
    assert user == {"role": "user", "content": problem}
    assert get_template("chord") is CHORD_TEMPLATE
    with pytest.raises(ValueError, match="--template must be one of"):
        get_template("qwen")
    with pytest.raises(ValueError, match="must contain"):
        PromptTemplate("bad", user="no placeholder")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (27.0, "27"),
        ("27.0", "27"),
        ("27.00", "27"),
        (" 12 ", "12"),
        (204, "204"),
        (0.5, "0.5"),
        ("033", "033"),
        (r"\frac{1}{2}", r"\frac{1}{2}"),
        ("-984", "-984"),
        ("2.50", "2.50"),
    ],
)
def test_normalize_ground_truth(value, expected):
    assert normalize_ground_truth(value) == expected


def test_seeded_subset():
    picked = seeded_subset(100, 10, seed=3)
    assert picked == sorted(picked) and len(set(picked)) == 10 and all(0 <= i < 100 for i in picked)
    assert picked == seeded_subset(100, 10, seed=3) and picked != seeded_subset(100, 10, seed=4)
    assert seeded_subset(5, 0, seed=0) == seeded_subset(5, 9, seed=0) == [0, 1, 2, 3, 4]


# --- evaluation sets ----------------------------------------------------------------------------------


def test_gsm8k():
    assert check_rl_rows(gsm8k.convert(load_sample("gsm8k", "train"), "train"), "gsm8k", "train") == [
        "72",
        "10",
        "1600",
    ]
    assert check_rl_rows(gsm8k.convert(load_sample("gsm8k", "test"), "test"), "gsm8k", "test") == ["18", "3"]
    assert gsm8k.extract_answer("a #### 1 #### 2,000 ") == "2000"
    with pytest.raises(ValueError, match="####"):
        gsm8k.extract_answer("no marker 5")


def test_math500():
    ds = math500.convert(load_sample("math500", "test"))
    assert check_rl_rows(ds, "math500", "test") == [r"\left( 3, \frac{\pi}{2} \right)", r"\frac{14}{3}", "27"]
    assert ds[0]["extra_info"]["unique_id"] == "test/precalculus/807.json" and ds[1]["extra_info"]["level"] == 3


@pytest.mark.parametrize(
    ("module", "raw_split", "truths", "extra"),
    [
        (aime2024, "train", ["204", "113"], {"id": 60}),
        (aime2025, "train", ["70", "117"], {}),
        (hmmt_feb2025, "train", ["103", "3375", "-984"], {"problem_idx": 1}),
        (amc2023, "test", ["27", "36"], {}),  # stored as floats 27.0, 36.0
    ],
)
def test_competition_sets(module, raw_split, truths, extra):
    raw = load_sample(module.NAME, raw_split)
    ds = module.convert(raw)
    assert check_rl_rows(ds, module.NAME, "test") == truths
    assert {k: ds[0]["extra_info"][k] for k in extra} == extra
    problem_key = "question" if module is amc2023 else "problem"
    assert ds[0]["extra_info"]["problem"] == raw[0][problem_key].strip()


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match=r"\['problem'\] not in"):
        aime2024.convert(load_sample("amc2023", "test"))


def test_chord_template_on_an_eval_set():
    ds = math500.convert(load_sample("math500", "test"), CHORD_TEMPLATE)
    check_rl_rows(ds, "math500", "test", CHORD_TEMPLATE)
    assert ds[0]["prompt"][0]["role"] == "system"


# --- training sets ----------------------------------------------------------------------------------


def test_simplerl_zoo():
    raw = load_sample("simplerl_zoo", "train")
    every = simplerl_zoo.convert(raw, "train", n=0)
    # five rows, the last without an answer
    assert check_rl_rows(every, "simplerl_zoo", "train") == ["2", "10", r"20\sqrt3", r"\sqrt{2}"]
    assert every[0]["extra_info"]["problem"] == raw[0]["extra_info"]["question"]
    assert "<|im_start|>" not in every[0]["prompt"][0]["content"]  # the pre-rendered chat string is not reused
    two = simplerl_zoo.convert(raw, "train", n=2, seed=0)
    truths = check_rl_rows(two, "simplerl_zoo", "train")
    assert len(truths) == 2 and truths == [t for t in ["2", "10", r"20\sqrt3", r"\sqrt{2}"] if t in truths]
    assert two.to_list() == simplerl_zoo.convert(raw, "train", n=2, seed=0).to_list()
    assert simplerl_zoo.N_TRAIN == 8192
    test = simplerl_zoo.convert(load_sample("simplerl_zoo", "test"), "test")
    assert check_rl_rows(test, "simplerl_zoo", "test") == [r"\left( 3, \frac{\pi}{2} \right)", "27"]


def test_simplerl_zoo_field_fallbacks():
    assert simplerl_zoo.question_and_answer({"question": " Q ", "gt_answer": 5.0}) == ("Q", "5")
    assert simplerl_zoo.question_and_answer({"extra_info": {"question": "Q", "answer": "3"}}) == ("Q", "3")
    assert simplerl_zoo.question_and_answer({"extra_info": {}}) == (None, None)
    from datasets import Dataset

    with pytest.raises(ValueError, match="no row has both"):
        simplerl_zoo.convert(Dataset.from_list([{"question": "Q", "gt_answer": ""}]), "train")


def test_dapo_math_deduplicates_and_strips_its_instruction():
    ds = dapo_math.convert(load_sample("dapo_math", "train"))
    assert check_rl_rows(ds, "dapo_math", "train") == ["34", "1023", "15"]  # 5 rows, 3 distinct problems
    problems = [row["extra_info"]["problem"] for row in ds]
    assert problems[0].startswith("In triangle $ABC$") and problems[0].endswith("find $a + b + c$.")
    assert all("Answer:" not in p for p in problems)
    assert ds[1]["extra_info"]["source_index"] == "b426d104-244d-4831-a2c4-cd756b61700a"
    assert dapo_math.strip_instruction(dapo_math.PREFIX + " x + 1 " + dapo_math.SUFFIX) == "x + 1"
    with pytest.raises(ValueError, match="unexpected DAPO-Math prompt"):
        dapo_math.strip_instruction("Solve 1 + 1.")


# --- OpenR1-Math, CHORD's split ---------------------------------------------------------------------

#: per sample problem (uuid suffix): traces kept with a 200-character limit (CJK problem 4 and problem 5, whose
#: traces are all wrong, are dropped; problem 6 has one trace over the limit).
KEPT = {0: 3, 1: 2, 2: 1, 3: 2, 6: 1, 7: 2, 8: 2, 9: 2}
INTEGER = {0, 1, 2, 6, 7, 8}  # answers int() accepts (3 is 1/2, 9 is "1.0")


def _uid(uuid: str) -> int:
    return int(uuid[-12:])


def test_openr1_helpers():
    assert has_cjk("\u6c42 x") and has_cjk("\U00020000") and not has_cjk("Find $x$, café")
    assert [is_integer_answer(a) for a in ("12", " -3 ", "1.0", "1/2", None, 7)] == [
        True,
        True,
        False,
        False,
        False,
        True,
    ]


def test_openr1_expert_pool():
    raw = load_sample("openr1_math", "train")
    pool = expert_pool(raw, token_len=len, max_expert_tokens=200)
    assert {_uid(p["uuid"]): len(p["traces"]) for p in pool} == KEPT
    by_uid = {_uid(p["uuid"]): p for p in pool}
    assert all(r"\boxed{47}" in t for t in by_uid[1]["traces"])  # the wrong trace (53) is gone
    no_limit = expert_pool(raw, token_len=None, max_expert_tokens=200)
    assert {_uid(p["uuid"]): len(p["traces"]) for p in no_limit}[6] == 2


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_openr1_chord_split(seed):
    raw = load_sample("openr1_math", "train")
    split = ChordSplit(n_sft=2, n_rl=100, max_expert_tokens=200, seed=seed)
    out = openr1_math.convert(raw, split, token_len=len)
    pool = {p["problem"]: p for p in expert_pool(raw, len, 200)}

    sft_problems = set()
    for row in out["sft"]:
        system, user, assistant = row["messages"]
        assert system == CHORD_TEMPLATE.messages("x")[0] and user["role"] == "user" and assistant["role"] == "assistant"
        p = pool[user["content"]]
        assert _uid(p["uuid"]) in INTEGER and assistant["content"] in p["traces"]
        sft_problems.add(_uid(p["uuid"]))
    assert len(sft_problems) == 2

    truths = check_rl_rows(out["train"], "openr1_math", "train", CHORD_TEMPLATE)
    rl = {_uid(row["extra_info"]["uuid"]) for row in out["train"]}
    # every problem with an integer answer and two kept traces that SFT did not take, since n_rl covers them all
    assert rl == {i for i in INTEGER if KEPT[i] >= 2} - sft_problems
    for row, truth in zip(out["train"], truths):
        p = pool[row["extra_info"]["problem"]]
        assert row["extra_info"]["expert_response"] in p["traces"] and truth == normalize_ground_truth(p["answer"])
    assert "12" in truths or 7 not in rl  # " 12 " is written "12"
    again = openr1_math.convert(raw, split, token_len=len)
    assert again["sft"].to_list() == out["sft"].to_list() and again["train"].to_list() == out["train"].to_list()


def test_openr1_sft_any_answer_and_errors():
    raw = load_sample("openr1_math", "train")
    pool = expert_pool(raw, token_len=None, max_expert_tokens=200)  # no length limit: problem 6 keeps 2 traces
    rl_eligible = {i for i in INTEGER if {**KEPT, 6: 2}[i] >= 2}
    for seed in range(6):
        split = ChordSplit(n_sft=7, n_rl=100, sft_integer_only=False, seed=seed)  # 7 of the 8 problems go to SFT
        sft, rl = select(pool, split)
        sft_uids = {_uid(pool[i]["uuid"]) for i, _ in sft}
        (left,) = set(KEPT) - sft_uids
        assert sft_uids & {3, 9}  # non-integer answers are allowed in SFT
        assert [_uid(pool[i]["uuid"]) for i, _ in rl] == ([left] if left in rl_eligible else [])
        if not rl:
            with pytest.raises(ValueError, match="no rows left"):
                openr1_math.convert(raw, split, token_len=None)
    with pytest.raises(ValueError, match="no rows left"):  # SFT takes every integer problem: no RL row left
        openr1_math.convert(raw, ChordSplit(n_sft=100, seed=0), token_len=len)
    with pytest.raises(ValueError, match=r"ChordSplit.n_rl \(--n-rl\) must be >= 1"):
        ChordSplit(n_rl=0)


# --- the command line, without network --------------------------------------------------------------

MODULES = {name: importlib.import_module(f"verl_espo.data.{name}") for name in DATASETS}


@pytest.fixture
def offline(monkeypatch):
    """Every module's ``load_hf`` returns its sample; the calls are recorded."""
    calls = []
    for name, module in MODULES.items():

        def fake(hf_id, *, name=None, split, revision=None, _name=name, **kwargs):
            calls.append((_name, hf_id, name, split, kwargs.get("data_files")))
            return load_sample(_name, split)

        monkeypatch.setattr(module, "load_hf", fake)
    return calls


def test_cli_all_writes_every_split(tmp_path, offline):
    only = [n for n in DATASETS if n != "openr1_math"]  # its defaults (5k/20k) need more than the sample
    written = data_main.prepare_all(str(tmp_path), only)
    for name in only:
        assert sorted(written[name]) == sorted(get_spec(name).splits)
        for split, path in written[name].items():
            assert path == tmp_path / name / f"{split}.parquet"
            df = pd.read_parquet(path)
            assert list(df.columns) == RL_COLUMNS and (df.data_source == name).all() and len(df) > 0
    assert ("gsm8k", "openai/gsm8k", "main", "test", None) in offline
    assert ("aime2024", "HuggingFaceH4/aime_2024", None, "train", None) in offline
    assert (
        "simplerl_zoo",
        simplerl_zoo.HF_ID,
        None,
        "train",
        {"train": "simplelr_qwen_level3to5/train.parquet"},
    ) in offline


def test_cli_single_module_and_template(tmp_path, offline):
    data_main.main(["math500", "--out", str(tmp_path), "--template", "chord"])
    df = pd.read_parquet(tmp_path / "math500" / "test.parquet")
    assert df.prompt[0][0]["role"] == "system" and len(df) == 3
    with pytest.raises(SystemExit):
        data_main.main(["all", "--out", str(tmp_path), "--only", "gsm8k,nope"])


def test_cli_openr1_writes_sft_and_rl(tmp_path, offline):
    argv = ["--out", str(tmp_path), "--n-sft", "2", "--n-rl", "10", "--tokenizer", "none", "--seed", "1"]
    paths = run_cli(openr1_math.SPEC, argv)
    sft, rl = pd.read_parquet(paths["sft"]), pd.read_parquet(paths["train"])
    assert list(sft.columns) == ["messages"] and len(sft) == 2
    assert list(rl.columns) == RL_COLUMNS and all(isinstance(e["expert_response"], str) for e in rl.extra_info)
    assert ("openr1_math", openr1_math.HF_ID, "default", "train", None) in offline


def test_parquet_loads_in_verls_datasets(tmp_path, offline):
    """veRL's RLHFDataset reads the RL rows and MultiTurnSFTDataset the SFT rows (bundled toy tokenizer)."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_espo.toy.assets import build_tokenizer

    tok_dir = tmp_path / "tok"
    build_tokenizer(tok_dir)
    (tok_dir / "config.json").write_text('{"model_type": "qwen2"}')
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    out = tmp_path / "data"
    rl = data_main.prepare_all(str(out), ["aime2025"])["aime2025"]["test"]
    cfg = OmegaConf.create({"max_prompt_length": 4096, "filter_overlong_prompts": False, "cache_dir": str(tmp_path)})
    dataset = RLHFDataset(data_files=[str(rl)], tokenizer=tokenizer, config=cfg)
    assert len(dataset) == 2
    item = dataset[0]  # veRL 0.9.1 tokenizes in the agent loop; the dataset hands over the chat messages
    assert item["raw_prompt"] == aime2025.convert(load_sample("aime2025", "train"))[0]["prompt"]
    assert item["index"] == 0 and item["reward_model"]["ground_truth"] == "70"
    assert "$17_b$" in tokenizer.apply_chat_template(item["raw_prompt"], tokenize=False, add_generation_prompt=True)
    paths = run_cli(openr1_math.SPEC, ["--out", str(out), "--n-sft", "2", "--n-rl", "10", "--tokenizer", "none"])
    sft = MultiTurnSFTDataset(str(paths["sft"]), tokenizer, OmegaConf.create({"max_length": 4096}))
    sample = sft[0]
    assert int(sample["loss_mask"].sum()) > 0 and len(sft) == 2
