"""MATH-500: ``python -m verl_espo.data.math500 --out DIR``; source, columns and citations in its row of
:data:`verl_espo.data.benchmarks.BENCHMARKS`."""

from verl_espo.data.benchmarks import BENCHMARKS
from verl_espo.data.common import load_hf, run_cli

__all__ = ["NAME", "HF_ID", "SPEC", "convert"]

NAME = "math500"
HF_ID, convert = BENCHMARKS[NAME].hf_id, BENCHMARKS[NAME].convert
SPEC = BENCHMARKS[NAME].spec(lambda *args, **kwargs: load_hf(*args, **kwargs))  # this module's load_hf, at call time

if __name__ == "__main__":
    run_cli(SPEC)
