#!/usr/bin/env bash
# Prepare .gpu/ for benchmarks/gpu/run_checks.sh on a lent GPU machine that has torch and transformers but
# no veRL, no Ray and no network (benchmarks/gpu/README.md). Idempotent. Run from anywhere:
#
#   bash benchmarks/gpu/prepare.sh                          # .gpu/whl: wheels for the device (CPython 3.12)
#   bash benchmarks/gpu/prepare.sh --python-version 3.11 --whl-dir .gpu/whl311   # for a local simulation
#
# .gpu/whl/    veRL and the packages its loss code imports that the device lacks, at the versions of the
#              project's venv (pure-python or manylinux x86-64 wheels, no dependencies).
# .gpu/stubs/  import-only stand-ins (benchmarks/gpu/import_stub.py) for packages that veRL imports at module
#              level but the checks never use: ray (~70 MB, imported by verl/protocol.py).
set -euo pipefail

PYVER=3.12
WHL_DIR=.gpu/whl
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --whl-dir) WHL_DIR="$2"; shift 2 ;;
    *) echo "prepare.sh: unknown argument $1 (use --python-version X.Y, --whl-dir DIR)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# .gpu/ must stay out of git (it travels to the device as an ignored, carried path).
EXCLUDE="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.gpu/' "$EXCLUDE" 2>/dev/null || echo /.gpu/ >> "$EXCLUDE"

# The versions of the project venv, .venv (pyproject.toml's ranges); one version of each.
BINARY_WHEELS=(
  verl==0.9.1                   # entropy/log-prob functions, policy-loss registry, actor configs
  tensordict==0.10.0            # imported by verl.protocol and verl.utils.torch_functional
  orjson==3.13.0                # tensordict
  pyvers==0.1.0                 # tensordict
  omegaconf==2.3.1              # verl.trainer.ppo.core_algos, verl.workers.config
  codetiming==1.4.0             # verl.utils.profiler, imported by verl.workers.config
)
SDIST_ONLY=(
  antlr4-python3-runtime==4.9.3 # omegaconf's grammar (the version hydra-core pins); PyPI has only an sdist
)

mkdir -p "$WHL_DIR"
PIP=(python3 -m pip)
have() {  # a wheel of this name and version is already in WHL_DIR
  local norm; norm="$(echo "${1%%==*}" | tr '-' '_')-${1##*==}-"
  compgen -G "$WHL_DIR/${norm}*.whl" > /dev/null || compgen -G "$WHL_DIR/$(echo "$norm" | tr 'A-Z' 'a-z')*.whl" > /dev/null
}
for spec in "${BINARY_WHEELS[@]}"; do
  have "$spec" && continue
  "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL_DIR" "$spec"
done
for spec in "${SDIST_ONLY[@]}"; do
  have "$spec" && continue
  "${PIP[@]}" wheel -q --no-deps -w "$WHL_DIR" "$spec"  # pure python: a py3-none-any wheel
done

# One file per package name: a stale version would be installed next to the pinned one.
dupes="$(ls "$WHL_DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z' 'a-z' | sort | uniq -d)"
if [[ -n "$dupes" ]]; then
  echo "prepare.sh: several wheels of $dupes in $WHL_DIR; remove the old ones" >&2
  exit 1
fi

for name in ray; do
  mkdir -p ".gpu/stubs/$name"
  cp benchmarks/gpu/import_stub.py ".gpu/stubs/$name/__init__.py"
done

ls -l "$WHL_DIR"
echo "total size of .gpu/: $(du -sh .gpu | cut -f1) (must stay well under 45 MiB; the run carries it)"
