"""Preparation of every training and evaluation set into veRL's parquet schemas (see :mod:`verl_espo.data.common`).

==================  ===========================================  ===============  =====================
name                source (Hugging Face)                        splits written   used by
==================  ===========================================  ===============  =====================
``simplerl_zoo``    ``hkust-nlp/SimpleRL-Zoo-Data``              train, test      ESPO training
``dapo_math``       ``BytedTsinghua-SIA/DAPO-Math-17k``          train            DAPO-style training
``openr1_math``     ``open-r1/OpenR1-Math-220k``                 sft, train       EGSPO / CHORD
``gsm8k``           ``openai/gsm8k``                             train, test      small runs
``math500``         ``HuggingFaceH4/MATH-500``                   test             ESPO, EGSPO eval
``aime2024``        ``HuggingFaceH4/aime_2024``                  test             ESPO, EGSPO eval
``aime2025``        ``yentinglin/aime_2025``                     test             ESPO, EGSPO eval
``hmmt_feb2025``    ``MathArena/hmmt_feb_2025``                  test             ESPO eval
``amc2023``         ``math-ai/amc23``                            test             EGSPO / CHORD eval
==================  ===========================================  ===============  =====================

``python -m verl_espo.data.<name> --out DIR`` writes ``DIR/<name>/<split>.parquet``;
``python -m verl_espo.data all --out DIR`` writes them all. Every row's ``data_source`` is its set's name.
The training sets have a module each; the evaluation sets are rows of :data:`verl_espo.data.benchmarks.BENCHMARKS`
(source, columns, citations), whose modules ``verl_espo/data/<name>.py`` are only their commands.
"""

from __future__ import annotations

import importlib

from verl_espo.data.benchmarks import BENCHMARKS

__all__ = ["DATASETS", "get_spec"]

#: Training sets (a module each), then the evaluation sets (rows of ``BENCHMARKS``, a thin module each).
DATASETS = ("simplerl_zoo", "dapo_math", "openr1_math", "gsm8k", *BENCHMARKS)


def get_spec(name: str):
    """The :class:`~verl_espo.data.common.DatasetSpec` of data set ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return importlib.import_module(f"verl_espo.data.{name}").SPEC
