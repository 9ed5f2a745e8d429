"""The recipes' launcher: data, single node, multi-node Ray, SLURM, the EGSPO chain (SFT -> RL), resuming.

Every command prints what it runs, with the environment it adds, before running it; ``--dry-run`` only prints.

    python -m verl_espo.recipes list                                # the launchable recipes
    python -m verl_espo.recipes data RECIPE [--data-root DIR]       # prepare the recipe's data sets (needs the Hub)
    python -m verl_espo.recipes show RECIPE [overrides ...]         # the composed config, then the checks
    python -m verl_espo.recipes run  RECIPE [--data-root DIR] [--out DIR] [--ray-address ADDR] [--sft]
                                     [--resume-from PATH | --no-resume] [--name NAME] [overrides ...]
    python -m verl_espo.recipes run  RECIPE --first-run-check [--first-run-steps 15] [--first-run-profile gpu]
    python -m verl_espo.recipes ray-head   [--port 6379] [--block]      # multi-node: on the head node, first
    python -m verl_espo.recipes ray-worker --address HEAD:6379 [--block]    # then on every other node

RECIPE is a path under the recipes folder without ``.yaml``, e.g. ``espo/qwen3_1.7b_base``. The recipes folder is
``recipes/`` of the source checkout this package is in (an editable install); ``--recipes-dir DIR`` or
``$VERL_ESPO_RECIPES`` names another one (needed where the package is installed without its checkout).

``run`` composes the recipe (Hydra, the same search path as the trainer), checks it (veRL's ``validate_config``,
the plugin's ``check_trainer_config``, and the recipe's parallelism and memory arithmetic for the stated world
size), then runs ``python -m verl.trainer.main_ppo --config-path=<recipes> --config-name=RECIPE`` through
:mod:`verl_espo.runner` with the run's directory ``<out>/<project>/<experiment>/`` (Hydra config,
``metrics-NNN.jsonl``, ``checkpoints/``). Running the same command again resumes from the latest checkpoint there
(veRL's ``resume_mode=auto``). ``--sft`` first runs EGSPO's stage 1 (veRL's SFT trainer, :mod:`verl_espo.stages`)
once per model and starts RL from its weights. ``run --first-run-check`` runs the recipe for a few steps (no
validation, no checkpoints, never resuming) as ``<experiment>-first-run`` and then checks its metrics against
:mod:`verl_espo.first_run_check`'s bounds, printing each figure against its bound.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from verl_espo import runner, stages

#: The recipes folder next to this package in its source checkout (an editable install).
CHECKOUT_RECIPES = Path(__file__).resolve().parents[1] / "recipes"
#: The environment variable that names another recipes folder (``--recipes-dir`` wins over it).
RECIPES_ENV = "VERL_ESPO_RECIPES"
#: The folders holding launchable recipes (one per paper, plus the one-GPU ladder); the others are config groups.
PAPER_DIRS = ("espo", "egspo", "ladder")
#: Where the data goes and the runs go unless --data-root / --out (or these environment variables) say otherwise.
DATA_ROOT_ENV, OUT_ENV = "VERL_ESPO_DATA_ROOT", "VERL_ESPO_OUT"
#: What starts each line the launcher prints.
PREFIX = "[recipes]"
#: Written into an SFT directory once stage 1 has finished, so later ``--sft`` runs reuse it.
SFT_DONE = "SFT_DONE"
#: The environment every process of a run needs: the plugin imported by every Ray worker (it is also loaded through
#: the ``verl.plugins`` entry point where the package is installed; this makes a missing install fail loudly).
PLUGIN_ENV = {"VERL_USE_EXTERNAL_MODULES": "verl_espo._plugin"}
#: Override keys that name the run already (or only move it) and stay out of the experiment name.
_NAME_NEUTRAL = (
    "recipe.data_root", "trainer.", "hydra.", "ray_kwargs.", "actor_rollout_ref.model.path", "algo=", "base_model=",
)  # fmt: skip
#: Reserved: set by the launcher itself.
_LAUNCHER_KEYS = ("trainer.default_local_dir", "hydra.run.dir")
#: ``run --first-run-check``: a short run with neither validation nor checkpoints (the steps come from the flag).
FIRST_RUN_OVERRIDES = ("trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1")

__all__ = [
    "RECIPES_ENV",
    "Plan",
    "find_recipes_dir",
    "recipe_names",
    "compose_recipe",
    "scale_problems",
    "check_recipe",
    "data_command",
    "plan_run",
    "first_run_plan",
    "run",
    "check_first_run",
    "main",
]


# ----------------------------------------------------------------------------- composing and checking
def find_recipes_dir(recipes_dir: str | Path | None = None) -> Path:
    """The recipes folder: ``recipes_dir`` (``--recipes-dir``), else ``$VERL_ESPO_RECIPES``, else the checkout's.

    Raises ``ValueError`` naming the flag when the folder holds no recipes (a package installed without its source
    checkout has none next to it).
    """
    given = recipes_dir or os.environ.get(RECIPES_ENV)
    path = Path(given).expanduser().resolve() if given else CHECKOUT_RECIPES
    missing = [f"{folder}/" for folder in PAPER_DIRS if not (path / folder).is_dir()]
    if missing:
        source = ("--recipes-dir" if recipes_dir else f"${RECIPES_ENV}") if given else "next to the verl_espo package"
        raise ValueError(
            f"no recipes folder at {path} ({source}; it lacks {', '.join(missing)}): pass --recipes-dir DIR "
            f"(or set {RECIPES_ENV}=DIR) with the recipes/ folder of a verl-espo checkout"
        )
    return path


def recipe_names(recipes_dir: str | Path | None = None) -> list[str]:
    """Every launchable recipe, ``<paper folder>/<name>`` (files starting with ``_`` are shared parts)."""
    root = find_recipes_dir(recipes_dir)
    return sorted(
        f"{folder}/{path.stem}" for folder in PAPER_DIRS for path in (root / folder).glob("*.yaml")
        if not path.name.startswith("_")
    )  # fmt: skip


def _check_recipe_name(recipe: str, recipes_dir: str | Path | None) -> str:
    recipe, names = recipe.removesuffix(".yaml").strip("/"), recipe_names(recipes_dir)
    if recipe not in names:
        raise ValueError(f"unknown recipe {recipe!r}; choose from: {', '.join(names)}")
    return recipe


def compose_recipe(recipe: str, overrides: Sequence[str] = (), recipes_dir: str | Path | None = None):
    """The recipe composed by Hydra exactly as ``main_ppo --config-path=<recipes> --config-name=RECIPE`` composes it.

    ``hydra.*`` overrides only steer Hydra's run directory and are left out here.
    """
    from hydra import compose, initialize_config_dir

    recipe = _check_recipe_name(recipe, recipes_dir)
    with initialize_config_dir(config_dir=str(find_recipes_dir(recipes_dir)), version_base=None):
        return compose(config_name=recipe, overrides=[o for o in overrides if not o.startswith("hydra.")])


def _get(cfg, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=default)


def scale_problems(cfg) -> list[str]:
    """What in the recipe's parallelism and memory settings cannot work for its stated hardware (empty: none).

    The arithmetic of the recipes' comments, as checks: Ulysses and vLLM tensor parallelism must divide the heads and
    the GPUs, token-budget micro-batches must hold the longest sequence, every data-parallel rank must get whole
    rows, and the FSDP state left on a GPU next to vLLM's share must fit (fp32 weights + grads + Adam = 16 B/param,
    sharded over all GPUs; param offload moves 8 B, optimizer offload 8 B to CPU memory).
    """
    problems: list[str] = []
    info = _get(cfg, "recipe.model_info", {}) or {}
    actor = "actor_rollout_ref.actor"
    nodes, per_node = int(_get(cfg, "trainer.nnodes")), int(_get(cfg, "trainer.n_gpus_per_node"))
    world = nodes * per_node
    sp = int(_get(cfg, f"{actor}.ulysses_sequence_parallel_size", 1) or 1)
    tp = int(_get(cfg, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1) or 1)
    heads, kv_heads = info.get("heads"), info.get("kv_heads")
    if world % sp:
        problems.append(f"{actor}.ulysses_sequence_parallel_size={sp} does not divide the {world} GPUs")
    if heads and heads % sp:
        problems.append(f"{actor}.ulysses_sequence_parallel_size={sp} does not divide the model's {heads} heads")
    if per_node % tp:
        problems.append(f"rollout.tensor_model_parallel_size={tp} does not divide the {per_node} GPUs of a node")
    if heads and heads % tp:
        problems.append(f"rollout.tensor_model_parallel_size={tp} does not divide the model's {heads} heads")
    if kv_heads and kv_heads % tp and tp % kv_heads:
        problems.append(f"rollout.tensor_model_parallel_size={tp} and the model's {kv_heads} KV heads do not divide")

    longest = int(_get(cfg, "data.max_prompt_length")) + int(_get(cfg, "data.max_response_length"))
    if _get(cfg, f"{actor}.use_dynamic_bsz"):
        budget = int(_get(cfg, f"{actor}.ppo_max_token_len_per_gpu")) * sp
        if budget < longest:
            problems.append(
                f"{actor}.ppo_max_token_len_per_gpu x ulysses_sequence_parallel_size = {budget} tokens cannot hold "
                f"one sequence of max_prompt_length + max_response_length = {longest} tokens"
            )

    dp = max(world // sp, 1)
    n = int(_get(cfg, "actor_rollout_ref.rollout.n"))
    expert_rows = int(_get(cfg, "data.expert.batch_size", 0) or 0) if _get(cfg, "data.expert.files") else 0
    rows = int(_get(cfg, "data.train_batch_size")) * n + expert_rows
    mini = int(_get(cfg, f"{actor}.ppo_mini_batch_size"))
    if rows % dp:
        problems.append(f"a step's {rows} rows do not split evenly over {dp} data-parallel ranks")
    if int(_get(cfg, "data.train_batch_size")) % mini:
        problems.append(f"data.train_batch_size is not a multiple of {actor}.ppo_mini_batch_size={mini}")
    elif (mini * n) % dp:
        problems.append(f"a mini-batch of {mini} x {n} responses does not split evenly over {dp} data-parallel ranks")

    memory = float(_get(cfg, "recipe.gpu_memory_gb", 0) or 0)
    params = float(info.get("params_b", 0) or 0) * 1e9
    if memory and params:
        fsdp = _get(cfg, f"{actor}.fsdp_config", {}) or {}
        bytes_per_param = 16 - 8 * bool(fsdp.get("param_offload")) - 8 * bool(fsdp.get("optimizer_offload"))
        resident = params * bytes_per_param / world / 1e9
        util = float(_get(cfg, "actor_rollout_ref.rollout.gpu_memory_utilization"))
        vllm_weights = params * 2 / tp / 1e9
        if resident + util * memory > 0.9 * memory:
            problems.append(
                f"{resident:.1f} GB of FSDP state per GPU + vLLM's {util} x {memory:g} GB exceed 90% of the GPU: "
                "offload (fsdp_config.param_offload / optimizer_offload) or lower gpu_memory_utilization"
            )
        if vllm_weights > 0.8 * util * memory:
            problems.append(
                f"vLLM's bf16 weights ({vllm_weights:.1f} GB per GPU at TP {tp}) leave no KV cache in "
                f"{util} x {memory:g} GB: raise rollout.tensor_model_parallel_size"
            )
    return problems


def check_recipe(cfg) -> None:
    """veRL's own config validation for the stated world size, the plugin's start-up checks, the scale checks.

    Starts no worker and loads no model. Raises ``ValueError`` listing every problem found.
    """
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from verl_espo.trainer.checks import check_trainer_config

    with contextlib.redirect_stdout(io.StringIO()):  # validate_config prints a success line
        validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    check_trainer_config(cfg)
    problems = scale_problems(cfg)
    if problems:
        raise ValueError("the recipe's scale settings do not fit its hardware:\n  - " + "\n  - ".join(problems))


# ----------------------------------------------------------------------------- data
def _files(cfg, key: str) -> list[str]:
    value = _get(cfg, key)
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def data_command(cfg) -> list[str]:
    """``python -m verl_espo.data all`` for the sets the recipe reads, with its prompt template, into its data dir."""
    names: list[str] = []
    for key in ("recipe.train_files", "recipe.val_files", "recipe.expert_files", "recipe.sft_files"):
        for path in _files(cfg, key):
            name = Path(path).parent.name
            if name not in names:
                names.append(name)
    return [
        sys.executable, "-m", "verl_espo.data", "all",
        "--out", str(_get(cfg, "recipe.data_dir")),
        "--template", str(_get(cfg, "recipe.template")),
        "--only", ",".join(names),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- planning a run
@dataclass
class Plan:
    """Everything ``run`` executes: the optional SFT stage, then the trainer, with the environment of each."""

    recipe: str
    run_dir: Path
    command: list[str]
    env: dict[str, str]
    world: int
    sft_command: Optional[list[str]] = None
    sft_dir: Optional[Path] = None
    base_model: Optional[str] = None
    notes: list[str] = field(default_factory=list)


def _slug(overrides: Sequence[str]) -> str:
    """A stable experiment-name suffix from the user's overrides (``...espo.alpha=0.05`` -> ``alpha0.05``)."""
    parts = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if override.startswith(_NAME_NEUTRAL) or key.startswith(_NAME_NEUTRAL):
            continue
        leaf = key.rsplit(".", 1)[-1]
        parts.append(f"{leaf}{value}".replace("/", "_").replace(",", "_").strip("[]'\" "))
    return "-".join(parts)


def _next_metrics_file(run_dir: Path) -> Path:
    """``metrics-NNN.jsonl``, NNN one above the last attempt's: veRL's file logger truncates its file on open, and
    ``python -m verl_espo.report`` merges a run's files in name order, so a resumed attempt's steps win."""
    taken = sorted(run_dir.glob("metrics-[0-9][0-9][0-9].jsonl"))
    number = int(taken[-1].stem.split("-")[1]) + 1 if taken else 0
    return run_dir / f"metrics-{number:03d}.jsonl"


def _latest_checkpoint(checkpoints: Path) -> Optional[str]:
    """The checkpoint veRL's ``resume_mode=auto`` resumes from (veRL's own lookup), or None."""
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path, get_checkpoint_tracker_filename

    if not Path(get_checkpoint_tracker_filename(str(checkpoints))).exists():
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it found
        return find_latest_ckpt_path(str(checkpoints))


def plan_run(
    recipe: str,
    overrides: Sequence[str] = (),
    *,
    data_root: str | Path,
    out: str | Path,
    name: Optional[str] = None,
    ray_address: Optional[str] = None,
    sft: bool = False,
    sft_step: Optional[int] = None,
    sft_overrides: Sequence[str] = (),
    resume_from: Optional[str] = None,
    no_resume: bool = False,
    check: bool = True,
    recipes_dir: str | Path | None = None,
) -> Plan:
    """Compose and check the recipe, then build the commands ``run`` executes (nothing is run here)."""
    recipes_dir = find_recipes_dir(recipes_dir)
    recipe = _check_recipe_name(recipe, recipes_dir)
    user = list(overrides)
    reserved = [o for o in user if o.split("=", 1)[0].lstrip("+~") in _LAUNCHER_KEYS]
    if reserved:
        raise ValueError(f"{reserved}: the launcher sets these (use --out to move the run directory)")
    base = [f"recipe.data_root={Path(data_root).expanduser().resolve()}", *user]
    if resume_from and no_resume:
        raise ValueError("--resume-from and --no-resume exclude each other")
    cfg = compose_recipe(recipe, base, recipes_dir)
    notes: list[str] = []

    experiment = name or _get(cfg, "trainer.experiment_name")
    if not name:
        experiment = "-".join(p for p in (experiment, "from-sft" if sft else "", _slug(user)) if p)
    project = _get(cfg, "trainer.project_name")
    run_dir = Path(out).expanduser().resolve() / project / experiment
    launcher = [
        f"trainer.experiment_name={experiment}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
    ]
    if resume_from:
        launcher += ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={resume_from}"]
    elif no_resume:
        launcher.append("trainer.resume_mode=disable")
    if ray_address:
        launcher.append(f"++ray_kwargs.ray_init.address={ray_address}")

    sft_command = sft_dir = base_model = None
    model_override: list[str] = []
    if sft:
        sft_config = _get(cfg, "recipe.sft_config")
        sft_files = _files(cfg, "recipe.sft_files")
        if not sft_config or not sft_files:
            raise ValueError(f"{recipe} has no SFT stage (recipe.sft_config / recipe.sft_files); drop --sft")
        base_model = _get(cfg, "actor_rollout_ref.model.path")
        sft_dir = Path(out).expanduser().resolve() / project / f"sft-{_get(cfg, 'recipe.model')}"
        if (sft_dir / SFT_DONE).exists():
            notes.append(f"stage 1 already done in {sft_dir}: reusing it (delete {sft_dir / SFT_DONE} to redo it)")
        else:
            sft_command = stages.sft_command(
                base_model, sft_files, sft_dir, nproc=int(_get(cfg, "trainer.n_gpus_per_node")),
                config_name=sft_config, overrides=[f"hydra.run.dir={sft_dir / 'hydra'}", *sft_overrides],
            )  # fmt: skip
        step = f"global_step_{sft_step}" if sft_step is not None else "global_step_LATEST"
        model_override = [f"actor_rollout_ref.model.path={sft_dir / step / 'huggingface'}"]
    elif _get(cfg, "recipe.paper") == "egspo" and _get(cfg, "recipe.method") == "egspo":
        start = _get(cfg, "actor_rollout_ref.model.path")
        notes.append(f"EGSPO without --sft skips its stage 1: RL starts from {start}")

    if check:
        check_recipe(cfg)  # the launcher's own overrides change names and paths only
    latest = _latest_checkpoint(run_dir / "checkpoints")
    if latest is not None and not (resume_from or no_resume):
        notes.append(f"resuming from {latest} (veRL resume_mode=auto)")

    metrics = _next_metrics_file(run_dir)
    launcher += [
        f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}",
        f"hydra.run.dir={run_dir}",
    ]
    command = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        f"--config-path={recipes_dir}", f"--config-name={recipe}",
        *base, *model_override, *launcher,
    ]  # fmt: skip
    env = runner.trainer_vars(metrics, cpu=_get(cfg, "trainer.device") == "cpu", extra=PLUGIN_ENV)
    world = int(_get(cfg, "trainer.nnodes")) * int(_get(cfg, "trainer.n_gpus_per_node"))
    return Plan(recipe, run_dir, command, env, world, sft_command, sft_dir, base_model, notes)


# ----------------------------------------------------------------------------- running
def _show(command: Sequence[str], env: Mapping[str, str], label: str) -> None:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    print(f"{PREFIX} {label}:\n  {(prefix + ' ') if prefix else ''}{shlex.join(command)}", flush=True)


def _execute(command: Sequence[str], env: Mapping[str, str], timeout_s: Optional[float] = None) -> int:
    """:func:`verl_espo.runner.run` with ``env`` added to this environment: past ``timeout_s`` the command's process
    group (the trainer's Ray processes included) is stopped and the exit code is 124."""
    return runner.run(command, {**os.environ, **env}, timeout_s=timeout_s)[0]


def _wait_for_gpus(address: str, needed: int, timeout_s: float) -> float:
    """Connect to the Ray cluster at ``address`` and wait until it has ``needed`` GPUs (or ``timeout_s`` passes)."""
    import time

    import ray

    ray.init(address=address, logging_level="ERROR")
    try:
        deadline = time.time() + timeout_s
        while True:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            if gpus >= needed or time.time() > deadline:
                return gpus
            print(f"{PREFIX} the Ray cluster has {gpus:g} of {needed} GPUs; waiting for workers", flush=True)
            time.sleep(10)
    finally:
        ray.shutdown()


def run(
    plan: Plan,
    *,
    dry_run: bool,
    sft_step: Optional[int] = None,
    ray_address: Optional[str] = None,
    wait_s: float = 600,
    timeout_s: Optional[float] = None,
) -> int:
    """Print the plan, then (unless ``dry_run``) run stage 1 if planned and the trainer (``timeout_s``: each)."""
    for note in plan.notes:
        print(f"{PREFIX} {note}")
    print(f"{PREFIX} run directory: {plan.run_dir}")
    if plan.sft_command is not None:
        _show(plan.sft_command, runner.trainer_vars(extra=PLUGIN_ENV), "stage 1 (SFT warm-up, verl_espo.stages)")
    _show(plan.command, plan.env, "trainer")
    if dry_run:
        return 0
    if ray_address:
        gpus = _wait_for_gpus(ray_address, plan.world, wait_s)
        if gpus < plan.world:
            print(
                f"{PREFIX} the Ray cluster at {ray_address} has {gpus:g} GPUs, the recipe needs {plan.world}: "
                "start the workers (python -m verl_espo.recipes ray-worker) or raise --wait"
            )
            return 2

    def trainer_command(weights: Optional[Path] = None) -> list[str]:
        """The trainer's command (starting from the SFT ``weights`` if given), recorded in the run directory."""
        command = list(plan.command)
        if weights is not None:
            model_key = "actor_rollout_ref.model.path="
            placeholder = next(a for a in command if a.startswith(model_key) and "global_step_" in a)
            command[command.index(placeholder)] = f"{model_key}{weights}"
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.run_dir / "command.txt").write_text(shlex.join(command) + "\n")
        return command

    if plan.sft_dir is None:
        return _execute(trainer_command(), plan.env, timeout_s)
    sft_dir = plan.sft_dir
    return stages.run_chain(
        plan.sft_command, sft_dir, trainer_command, base_model=plan.base_model, sft_step=sft_step,
        env=PLUGIN_ENV, rl_env=plan.env, timeout_s=timeout_s, prefix=PREFIX,
        on_sft_done=lambda: (sft_dir / SFT_DONE).write_text("stage 1 finished\n"),
    )  # fmt: skip


def first_run_plan(recipe: str, overrides: Sequence[str], steps: int, **kwargs: Any) -> Plan:
    """The plan of ``run --first-run-check``: the recipe for ``steps`` steps, no validation, no checkpoints, never
    resuming, in its own run directory ``<experiment>-first-run`` (``--name`` replaces ``<experiment>``)."""
    if not 1 <= steps <= 100:
        raise ValueError(f"--first-run-steps must be in [1, 100], got {steps}")
    overrides = [*overrides, f"trainer.total_training_steps={steps}", *FIRST_RUN_OVERRIDES]
    name = kwargs.pop("name", None)
    if name is None:  # the recipe's own experiment name, as a normal run of the same overrides would get it
        name = plan_run(recipe, overrides, **{**kwargs, "check": False}).run_dir.name
    kwargs["no_resume"] = True
    return plan_run(recipe, overrides, name=f"{name}-first-run", **kwargs)


def check_first_run(plan: Plan, profile: str) -> int:
    """Check the metrics this plan's run wrote against the profile's bounds; 0 if every check passed, else 1."""
    from verl_espo.first_run_check import PROFILES, check_steps, format_checks, read_steps

    metrics = Path(plan.env["VERL_FILE_LOGGER_PATH"])
    checks = check_steps(read_steps(metrics), PROFILES[profile])
    print(f"{PREFIX} first-run check of {metrics} ({profile} bounds):")
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1


def _ray_start(args: argparse.Namespace, head: bool) -> int:
    ray = str(Path(sys.executable).with_name("ray"))
    command = [ray if Path(ray).exists() else "ray", "start"]
    command += ["--head", f"--port={args.port}", "--dashboard-host=0.0.0.0"] if head else [f"--address={args.address}"]
    if args.num_gpus is not None:
        command.append(f"--num-gpus={args.num_gpus}")
    if args.block:
        command.append("--block")
    env = {**PLUGIN_ENV, "PYTHONUNBUFFERED": "1"}
    check = [sys.executable, "-c", "import verl_espo._plugin as p; assert not p.FAILED, p.FAILED; print('plugin OK')"]
    _show(check, env, "check that this node's Python has the plugin")
    _show(command, env, "Ray " + ("head" if head else "worker"))
    if args.dry_run:
        return 0
    rc = _execute(check, env)
    return rc if rc != 0 else _execute(command, env)


# ----------------------------------------------------------------------------- command line
def _split_overrides(parser: argparse.ArgumentParser, extra: Sequence[str]) -> list[str]:
    bad = [a for a in extra if "=" not in a]
    if bad:
        parser.error(f"unrecognized arguments {bad} (Hydra overrides look like key=value)")
    return list(extra)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verl_espo.recipes",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    recipes = argparse.ArgumentParser(add_help=False)
    where = f"the recipes folder (default ${RECIPES_ENV}, else recipes/ of the source checkout)"
    recipes.add_argument("--recipes-dir", default=None, help=where)
    sub.add_parser("list", help="the launchable recipes", parents=[recipes])

    def recipe_parser(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, parents=[recipes])
        p.add_argument("recipe", help="e.g. espo/qwen3_1.7b_base (see `list`)")
        p.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV, "~/data"),
                       help=f"root of the prepared data (default ${DATA_ROOT_ENV} or ~/data)")  # fmt: skip
        p.add_argument("--dry-run", action="store_true", help="print, run nothing")
        return p

    recipe_parser("data", "prepare the recipe's data sets with `python -m verl_espo.data`")
    show = recipe_parser("show", "print the composed config (resolved where possible), then check it")
    show.add_argument("--key", default=None, help="print only this key, e.g. actor_rollout_ref.actor")
    p_run = recipe_parser("run", "check and launch a recipe")
    p_run.add_argument("--out", default=os.environ.get(OUT_ENV, "outputs"),
                       help=f"runs go to OUT/<project>/<experiment> (default ${OUT_ENV} or ./outputs; shared storage "
                            "on a multi-node cluster)")  # fmt: skip
    p_run.add_argument("--name", default=None, help="experiment name (default <model>-<method>[-from-sft][-<slug>])")
    p_run.add_argument("--ray-address", default=None, help="an existing Ray cluster, e.g. auto or HEAD:6379")
    p_run.add_argument("--wait", type=float, default=600, help="--ray-address: seconds to wait for the GPUs")
    p_run.add_argument("--sft", action="store_true", help="run the recipe's SFT stage first (once) and RL from it")
    p_run.add_argument("--sft-step", type=int, default=None, help="start RL from this SFT step (default: the last)")
    p_run.add_argument("--sft-override", action="append", default=[], metavar="KEY=VALUE", help="stage-1 override")
    p_run.add_argument("--resume-from", default=None, help="a global_step_N checkpoint directory to resume from")
    p_run.add_argument("--no-resume", action="store_true", help="start afresh even if checkpoints exist")
    p_run.add_argument("--no-check", action="store_true", help="skip the config checks")
    first = "a short first run (<experiment>-first-run), then sanity checks of its metrics"
    p_run.add_argument("--first-run-check", action="store_true", help=first)
    p_run.add_argument("--first-run-steps", type=int, default=15, help="--first-run-check: steps (default 15)")
    profiles = "--first-run-check: the bounds (verl_espo.first_run_check.PROFILES; default gpu)"
    p_run.add_argument("--first-run-profile", default="gpu", choices=("gpu", "toy"), help=profiles)
    for name, head in (("ray-head", True), ("ray-worker", False)):
        p = sub.add_parser(name, help=f"start a Ray {'head' if head else 'worker'} with the plugin's environment")
        if head:
            p.add_argument("--port", type=int, default=6379)
        else:
            p.add_argument("--address", required=True, help="HEAD_IP:PORT of the head node")
        p.add_argument("--num-gpus", type=int, default=None, help="GPUs of this node (default: Ray detects them)")
        p.add_argument("--block", action="store_true", help="stay in the foreground (srun / SLURM)")
        p.add_argument("--dry-run", action="store_true", help="print, run nothing")

    args, extra = parser.parse_known_args(argv)
    if args.command in ("ray-head", "ray-worker"):
        if extra:
            parser.error(f"unrecognized arguments {extra}")
        return _ray_start(args, head=args.command == "ray-head")
    overrides = _split_overrides(parser, extra)
    try:
        if args.command == "list":
            if overrides:
                parser.error(f"unrecognized arguments {overrides}")
            print("\n".join(recipe_names(args.recipes_dir)))
            return 0
        data_root = str(Path(args.data_root).expanduser().resolve())
        composed = [f"recipe.data_root={data_root}", *overrides]
        if args.command == "data":
            command = data_command(compose_recipe(args.recipe, composed, args.recipes_dir))
            _show(command, {}, "data preparation (downloads from the Hugging Face Hub)")
            return 0 if args.dry_run else _execute(command, {})
        if args.command == "show":
            from omegaconf import OmegaConf

            cfg = compose_recipe(args.recipe, composed, args.recipes_dir)
            node = OmegaConf.select(cfg, args.key) if args.key else cfg
            print(OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else node)
            check_recipe(cfg)
            print(f"{PREFIX} checks passed: veRL validate_config, verl_espo check_trainer_config, scale")
            return 0
        common = dict(
            data_root=data_root, out=args.out, name=args.name, ray_address=args.ray_address, sft=args.sft,
            sft_step=args.sft_step, sft_overrides=args.sft_override, recipes_dir=args.recipes_dir,
        )  # fmt: skip
        if args.first_run_check:
            if args.resume_from:
                raise ValueError("--first-run-check starts afresh; drop --resume-from")
            plan = first_run_plan(args.recipe, overrides, args.first_run_steps, **common, check=not args.no_check)
        else:
            plan = plan_run(
                args.recipe, overrides, **common, resume_from=args.resume_from, no_resume=args.no_resume,
                check=not args.no_check,
            )  # fmt: skip
    except ValueError as error:
        print(f"{PREFIX} {error}", file=sys.stderr)
        return 2
    rc = run(plan, dry_run=args.dry_run, sft_step=args.sft_step, ray_address=args.ray_address, wait_s=args.wait)
    if args.first_run_check and not args.dry_run and rc == 0:
        return check_first_run(plan, args.first_run_profile)
    return rc


if __name__ == "__main__":
    sys.exit(main())
