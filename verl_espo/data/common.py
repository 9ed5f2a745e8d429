"""What every data-set module shares: prompt templates, veRL's row schemas, parquet writing, samples and the CLI.

RL rows follow veRL's schema (``verl/utils/dataset/rl_dataset.py``; ``data.prompt_key=prompt``,
``data.reward_fn_key=data_source``)::

    {"data_source": str, "prompt": [{"role": ..., "content": ...}, ...], "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": str}, "extra_info": {"split": str, "index": int, ...}}

SFT rows follow veRL's ``MultiTurnSFTDataset`` (``data.messages_key=messages``): ``{"messages": [system?, user,
assistant]}``; the loss covers the assistant turn.

Each data-set module defines ``SPEC`` (a :class:`DatasetSpec`; the evaluation sets' are built from their rows of
:data:`verl_espo.data.benchmarks.BENCHMARKS`): ``SPEC.prepare(args)`` downloads the source with HF ``datasets`` and
converts it; the conversion itself is a pure function of ``datasets.Dataset`` objects, tested on the small samples
kept in ``verl_espo/data/samples/``. ``python -m verl_espo.data.<name> --out DIR`` writes
``DIR/<name>/<split>.parquet``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "PromptTemplate",
    "ESPO_TEMPLATE",
    "CHORD_TEMPLATE",
    "TEMPLATES",
    "get_template",
    "ABILITY",
    "rl_row",
    "sft_row",
    "rl_dataset",
    "normalize_ground_truth",
    "seeded_subset",
    "load_hf",
    "load_sample",
    "write_splits",
    "DatasetSpec",
    "make_parser",
    "run_cli",
]

ABILITY = "math"

_INTEGRAL_FLOAT = re.compile(r"[+-]?\d+\.0*")


@dataclass(frozen=True)
class PromptTemplate:
    """How a problem becomes chat messages: an optional system prompt and a user message around ``{problem}``."""

    name: str
    user: str
    system: str | None = None

    def __post_init__(self) -> None:
        if "{problem}" not in self.user:
            raise ValueError(f"PromptTemplate {self.name!r}: `user` must contain '{{problem}}', got {self.user!r}")

    def messages(self, problem: str) -> list[dict[str, str]]:
        """``[system?, user]`` for ``problem`` (plain substitution: braces in the problem are kept as they are)."""
        user = {"role": "user", "content": self.user.replace("{problem}", problem)}
        return [{"role": "system", "content": self.system}, user] if self.system is not None else [user]


#: ESPO (arXiv 2512.00499) does not give its prompt. Our choice: the "qwen-boxed" instruction of SimpleRL-Zoo
#: (arXiv 2503.18892), whose data ESPO trains on, as the user message with no system prompt. It is also the
#: instruction the OpenR1-Math expert traces were generated with.
ESPO_TEMPLATE = PromptTemplate(
    name="espo",
    user="{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.",
)

#: CHORD's prompt (arXiv 2508.11408), verbatim from Trinity-RFT ``examples/mix_chord/get_openr1_data.py``
#: (``SYSTEM_PROMPT``, user message = the problem). EGSPO (arXiv 2602.03309) does not give its prompt; it uses its
#: baseline CHORD's, which is our choice too.
CHORD_TEMPLATE = PromptTemplate(
    name="chord",
    system=(
        "You are a helpful assistant that solves MATH problems. You should first thinks about the reasoning process "
        "in mind and then provides the user with the answer. You should present your reasoning process using the "
        "format: <think>\n ...your reasoning process here... </think>\n first. You should always include your final "
        "answer in \\boxed{} as closed-form results."
    ),
    user="{problem}",
)

TEMPLATES = {t.name: t for t in (ESPO_TEMPLATE, CHORD_TEMPLATE)}


def get_template(name: str) -> PromptTemplate:
    """The template called ``name``; a ValueError naming the choices otherwise."""
    if name not in TEMPLATES:
        raise ValueError(f"--template must be one of {sorted(TEMPLATES)}, got {name!r}")
    return TEMPLATES[name]


def rl_row(
    data_source: str,
    problem: str,
    ground_truth: str,
    template: PromptTemplate,
    split: str,
    index: int,
    **extra: Any,
) -> dict[str, Any]:
    """One RL row in veRL's schema; ``extra_info`` = ``{split, index, problem, **extra}``."""
    return {
        "data_source": data_source,
        "prompt": template.messages(problem),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": index, "problem": problem, **extra},
    }


def sft_row(problem: str, response: str, template: PromptTemplate) -> dict[str, Any]:
    """One SFT row: ``{"messages": [system?, user, assistant=response]}``."""
    return {"messages": [*template.messages(problem), {"role": "assistant", "content": response}]}


def rl_dataset(
    records: Iterable[tuple[str, str, dict[str, Any]]], *, data_source: str, split: str, template: PromptTemplate
):
    """A ``datasets.Dataset`` of RL rows from ``(problem, ground_truth, extra_info extras)`` records, indexed 0..n-1."""
    from datasets import Dataset

    rows = [
        rl_row(data_source, problem, answer, template, split, i, **extra)
        for i, (problem, answer, extra) in enumerate(records)
    ]
    if not rows:
        raise ValueError(f"{data_source}/{split}: no rows left after conversion")
    return Dataset.from_list(rows)


def normalize_ground_truth(value: Any) -> str:
    """The ground truth as a string: stripped, and integral numbers without a fractional part (``27.0`` -> ``27``).

    Some sources store integer answers as floats; math-verify would accept either, but metrics read better.
    """
    if isinstance(value, bool) or value is None:
        raise TypeError(f"ground truth must be a number or a string, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text.split(".")[0] if _INTEGRAL_FLOAT.fullmatch(text) else text


def seeded_subset(n_items: int, n: int, seed: int) -> list[int]:
    """``n`` of ``range(n_items)`` chosen without replacement by ``numpy.random.default_rng(seed)``, sorted.

    ``n <= 0`` or ``n >= n_items`` keeps everything.
    """
    import numpy as np

    if n <= 0 or n >= n_items:
        return list(range(n_items))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_items, size=n, replace=False))


def load_hf(hf_id: str, *, name: str | None = None, split: str, revision: str | None = None, **kwargs: Any):
    """``datasets.load_dataset(hf_id, name, split=split, revision=revision)``: the only place that downloads."""
    from datasets import load_dataset

    return load_dataset(hf_id, name, split=split, revision=revision, **kwargs)


def load_sample(name: str, split: str):
    """The in-repo sample ``verl_espo/data/samples/<name>/<split>.jsonl`` as a ``datasets.Dataset`` (no network)."""
    import json

    from datasets import Dataset

    path = resources.files("verl_espo.data").joinpath("samples", name, f"{split}.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Dataset.from_list(rows)


def write_splits(splits: dict[str, Any], out: str | Path, name: str) -> dict[str, Path]:
    """Write each ``datasets.Dataset`` of ``splits`` to ``out/name/<split>.parquet``; return the paths."""
    directory = Path(out) / name
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, ds in splits.items():
        paths[split] = directory / f"{split}.parquet"
        ds.to_parquet(str(paths[split]))
    return paths


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: its name (= module and output folder), source, output splits and how to prepare it.

    Args:
        name: module name, ``data_source`` of its rows and the output folder ``DIR/<name>/``.
        hf_id: the Hugging Face data set it is built from.
        splits: the parquet files it writes, ``DIR/<name>/<split>.parquet``.
        prepare: ``prepare(args) -> {split: datasets.Dataset}``; downloads, then converts.
        default_template: name of the prompt template used unless ``--template`` says otherwise (ESPO's).
        add_arguments: adds the data set's own options to its parser.
        summary: one line for ``--help``.
    """

    name: str
    hf_id: str
    splits: Sequence[str]
    prepare: Callable[[argparse.Namespace], dict[str, Any]]
    default_template: str = ESPO_TEMPLATE.name
    add_arguments: Callable[[argparse.ArgumentParser], None] = field(default=_no_arguments)
    summary: str = ""


def make_parser(spec: DatasetSpec, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The CLI of one data set: ``--out``, ``--template``, ``--revision`` and the data set's own options."""
    parser = parser or argparse.ArgumentParser(
        prog=f"python -m verl_espo.data.{spec.name}",
        description=f"{spec.summary} Source: {spec.hf_id}. Writes {', '.join(spec.splits)}.parquet.",
    )
    parser.add_argument("--out", required=True, help="output root; files go to OUT/%s/<split>.parquet" % spec.name)
    parser.add_argument(
        "--template",
        default=spec.default_template,
        choices=sorted(TEMPLATES),
        help="prompt template (default: %(default)s)",
    )
    parser.add_argument("--revision", default=None, help="Hugging Face revision (commit or tag) of the source")
    spec.add_arguments(parser)
    return parser


def run_cli(spec: DatasetSpec, argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Parse ``argv``, prepare the data set and write its splits; print and return the written paths."""
    args = make_parser(spec).parse_args(argv)
    splits = spec.prepare(args)
    paths = write_splits(splits, args.out, spec.name)
    for split, path in paths.items():
        print(f"{spec.name}/{split}: {len(splits[split])} rows -> {path}")
    return paths
