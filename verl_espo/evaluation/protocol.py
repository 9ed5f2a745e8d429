"""The papers' evaluation protocols and the settings of one evaluation (benchmarks, samples per problem, sampling).

Defaults, with their sources (``docs/evaluation.md`` has the full table):

* AIME 2024, AIME 2025, HMMT February 2025: **avg@32**. ESPO (arXiv 2512.00499, experimental setup: "average@32" on
  AIME24, AIME25 and HMMT); CHORD (arXiv 2508.11408, Sec. 4.1 / App. A): avg@32 on AIME24/25. EGSPO (arXiv
  2602.03309) gives no protocol; its baselines are CHORD's, so we infer CHORD's.
* MATH-500: **accuracy**, read as one sample per problem (avg@1). ESPO: "MATH500: accuracy"; EGSPO's "MATH" column.
  n = 1 is our reading: neither paper gives the number of samples.
* AMC 2023: **avg@8** (CHORD).
* Sampling: temperature **1.0** (CHORD App. A: 1.0 for rollout and evaluation; ESPO does not state it, we use its
  training temperature), top-p **1.0** and top-k off (our choice: neither paper states them), at most **16,384**
  response tokens (both papers' training length; our choice for evaluation) and 2,048 prompt tokens (our choice).

Everything is configurable on the command line (``python -m verl_espo.evaluate``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PAPER_N",
    "TOY_BENCHMARK",
    "EvalSet",
    "Sampling",
    "checkpoint_name",
    "pass_at_k_values",
    "parse_benchmarks",
    "parse_n",
    "protocol_label",
]

#: Samples per problem of each benchmark prepared by :mod:`verl_espo.data` (see the module doc for sources).
PAPER_N: dict[str, int] = {
    "aime2024": 32,
    "aime2025": 32,
    "hmmt_feb2025": 32,
    "math500": 1,
    "amc2023": 8,
}

#: The bundled CPU benchmark: every problem of :mod:`verl_espo.toy.task`, generated on the fly (no data dir needed).
TOY_BENCHMARK = "toy_arithmetic"
TOY_N = 4

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class EvalSet:
    """One benchmark of an evaluation: its name (the label in the outputs), its parquet file and samples per problem.

    ``path`` is ``None`` only for :data:`TOY_BENCHMARK`, whose rows are generated.
    """

    name: str
    path: Path | None
    n: int

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"--benchmarks: invalid benchmark name {self.name!r} (letters, digits, '.', '_', '-')")
        if self.n < 1:
            raise ValueError(f"--n: {self.name} needs at least one sample per problem, got n={self.n}")

    @property
    def protocol(self) -> str:
        return protocol_label(self.n)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of the validation run (``actor_rollout_ref.rollout.val_kwargs`` and the lengths).

    Args:
        temperature: sampling temperature; 0 means greedy decoding (then every sample of a problem is the same).
        top_p: nucleus sampling threshold in (0, 1].
        top_k: top-k sampling, -1 for off.
        max_prompt_length: ``data.max_prompt_length``; ``None`` keeps the config's value.
        max_response_length: ``data.max_response_length`` (the rollout's ``response_length``); ``None`` keeps the
            config's value.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_prompt_length: int | None = None
    max_response_length: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ValueError(f"--top-k must be -1 or 0 (off) or >= 1, got {self.top_k}")
        for flag, value in (
            ("--max-prompt-length", self.max_prompt_length),
            ("--max-response-length", self.max_response_length),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1 token, got {value}")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0.0

    def overrides(self) -> list[str]:
        """Hydra overrides of ``main_ppo`` for these settings."""
        kw = "actor_rollout_ref.rollout.val_kwargs"
        out = [
            f"{kw}.temperature={self.temperature}",
            f"{kw}.top_p={self.top_p}",
            f"{kw}.top_k={self.top_k}",
            f"{kw}.do_sample={self.do_sample}",
        ]
        if self.max_prompt_length is not None:
            out.append(f"data.max_prompt_length={self.max_prompt_length}")
        if self.max_response_length is not None:
            out.append(f"data.max_response_length={self.max_response_length}")
        return out


def protocol_label(n: int) -> str:
    """``accuracy`` for one sample per problem, ``avg@n`` otherwise (the papers' names)."""
    return "accuracy" if n == 1 else f"avg@{n}"


def pass_at_k_values(n: int) -> list[int]:
    """The k of the pass@k reported for n samples: the powers of two up to n, and n itself (1, 2, 4, ..., n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def parse_n(spec: str | None, names: Sequence[str]) -> dict[str, int]:
    """Samples per problem for each benchmark: the paper's protocol, overridden by ``--n``.

    ``spec`` is ``None`` (the protocols), ``"16"`` (every benchmark), ``"aime2024=64,amc2023=16"`` (those
    benchmarks) or both (``"16,math500=1"``). A benchmark without a protocol (not in :data:`PAPER_N`) needs one.
    """
    default: int | None = None
    per: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        key, sep, value = item.rpartition("=")
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"--n: {item!r} is not N or NAME=N (e.g. --n 32 or --n aime2024=32,amc2023=8)") from None
        if not sep:
            default = count
        elif key not in names:
            raise ValueError(f"--n: {key!r} is not one of the benchmarks being evaluated ({', '.join(names)})")
        else:
            per[key] = count
    out = {}
    for name in names:
        protocol = TOY_N if name == TOY_BENCHMARK else PAPER_N.get(name)
        n = per.get(name, default if default is not None else protocol)
        if n is None:
            raise ValueError(
                f"--n: benchmark {name!r} has no default protocol (known: {', '.join(PAPER_N)}); "
                f"give its samples per problem, e.g. --n {name}=8"
            )
        out[name] = n
    return out


def parse_benchmarks(spec: str, data_dir: str | Path | None, n: str | None = None) -> list[EvalSet]:
    """``--benchmarks`` items as :class:`EvalSet`: ``NAME`` reads ``DATA_DIR/NAME/test.parquet`` (what
    ``python -m verl_espo.data.NAME --out DATA_DIR`` writes), ``NAME=PATH`` reads ``PATH``, and
    ``toy_arithmetic`` is generated. Files are checked to exist."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ValueError("--benchmarks is empty: name at least one (e.g. --benchmarks aime2024,math500)")
    named: dict[str, Path | None] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if name in named:
            raise ValueError(f"--benchmarks: {name!r} is given twice")
        if sep:
            named[name] = Path(path).expanduser()
        elif name == TOY_BENCHMARK:
            named[name] = None
        else:
            if data_dir is None:
                raise ValueError(
                    f"--benchmarks: {name!r} is read from DATA_DIR/{name}/test.parquet; pass --data-dir DIR "
                    f"(prepared with `python -m verl_espo.data.{name} --out DIR`) or give NAME=PATH"
                )
            named[name] = Path(data_dir).expanduser() / name / "test.parquet"
    for name, path in named.items():
        if path is not None and not path.is_file():
            raise FileNotFoundError(
                f"--benchmarks: no file {path} for {name!r}; prepare it with `python -m verl_espo.data.{name} "
                f"--out DATA_DIR` or give NAME=PATH"
            )
    counts = parse_n(n, list(named))
    return [EvalSet(name, path, counts[name]) for name, path in named.items()]


_STEP_DIR = re.compile(r"global_step_\d+")


def checkpoint_name(model: str) -> str:
    """A directory name for a checkpoint: its last path component, skipping veRL's ``actor/huggingface`` tail and
    keeping the run's name before ``global_step_N`` (``runs/espo/global_step_200/actor/huggingface`` ->
    ``espo_global_step_200``; ``Qwen/Qwen3-1.7B-Base`` -> ``Qwen3-1.7B-Base``)."""
    parts = [p for p in Path(model.rstrip("/")).parts if p not in ("/", ".", "..")]
    while parts and parts[-1] in ("huggingface", "actor"):
        parts.pop()
    if not parts:
        return "model"
    name = parts[-1]
    if _STEP_DIR.fullmatch(name) and len(parts) >= 2:
        name = f"{parts[-2]}_{name}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
