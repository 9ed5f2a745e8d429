"""``recipes/constraints-gpu.txt`` against what can be checked without network: pyproject.toml's ranges, the pins
in the installed veRL's own package metadata, and the installed verl and verl-espo."""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml with tomllib")

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "recipes" / "constraints-gpu.txt"
#: veRL 0.9.1's extras that the GPU recipes' stack comes from (vLLM rollout, FSDP engine, its flash-attn build).
VERL_EXTRAS = ("vllm", "fsdp", "flash-attn-cu130torch211")


def pins() -> dict[str, Version]:
    """The file's pins; every line must be ``name==version`` (a constraint, no extras, no markers)."""
    found: dict[str, Version] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{CONSTRAINTS.name}:{number}: {line!r} is not exact"
        assert not req.extras and req.marker is None, f"{CONSTRAINTS.name}:{number}: {line!r}"
        name = canonicalize_name(req.name)
        assert name not in found, f"{CONSTRAINTS.name}:{number}: {req.name} pinned twice"
        found[name] = Version(specs[0].version)
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_requirements() -> list[Requirement]:
    project = pyproject()["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["vllm"])
    return [Requirement(r) for r in reqs]


def verl_extra_requirements() -> list[Requirement]:
    """The installed veRL's requirements of the GPU extras (its metadata: no network)."""
    out = []
    for text in metadata.distribution("verl").requires or []:
        req = Requirement(text)
        if req.marker is not None and any(req.marker.evaluate({"extra": e}) for e in VERL_EXTRAS):
            out.append(req)
    return out


def test_every_pin_is_exact_and_names_verl_and_this_package():
    found = pins()
    assert {"verl", "verl-espo", "torch", "vllm", "transformers"} <= set(found)


def test_pins_lie_in_pyproject_ranges():
    found = pins()
    checked = 0
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        if name in found:
            assert req.specifier.contains(found[name], prereleases=True), f"{name}=={found[name]} outside {req}"
            checked += 1
    assert checked >= 4  # verl, torch, transformers, vllm (and verl[vllm])
    assert found["verl-espo"] == Version(pyproject()["project"]["version"])


def test_pins_equal_the_installed_verls_own_pins():
    """Where veRL's metadata pins a package (its GPU extras, or a range in its base requirements), the file agrees."""
    found = pins()
    named = set()
    for req in verl_extra_requirements():
        name = canonicalize_name(req.name)
        if name in found:
            assert req.specifier.contains(found[name], prereleases=True), f"{name}=={found[name]} vs veRL's {req}"
            named.add(name)
    for text in metadata.distribution("verl").requires or []:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if req.marker is None and name in found:
            assert req.specifier.contains(found[name], prereleases=True), f"{name}=={found[name]} vs veRL's {req}"
    # every pin but the two packages themselves comes from veRL's own GPU extras: none is invented here
    assert named - {"verl"} == set(found) - {"verl", "verl-espo"}


@pytest.mark.parametrize("package", ["verl", "verl-espo"])
def test_installed_versions_equal_the_pins(package):
    assert Version(metadata.version(package)) == pins()[canonicalize_name(package)]
