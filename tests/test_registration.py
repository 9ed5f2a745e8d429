"""Plugin registration through the ``verl.plugins`` entry point, checked in fresh interpreters.

veRL swallows entry-point import errors (it logs them at DEBUG), so a broken plugin would only show up as
"Unsupported loss mode: espo" deep inside a run. The plugin checks the veRL version first, then registers
its five pieces (platform, losses, rollout, checkpoint engine, trainer) one by one: a piece that a veRL
change breaks logs an ERROR naming the piece and the veRL version, and the others still register. The
subprocess scenarios import ``verl`` and nothing else, or break veRL internals and then load the entry point
exactly as veRL does; they run concurrently.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

VERL_VERSION = version("verl")


# Prints, as JSON on the last line, what the plugin registered in each of veRL's registries. A registry whose
# module was never imported holds nothing of the plugin's (and is not imported here: it would cost seconds).
PROBE = """
import json, sys

def ours(registry):
    return sorted(n for n, obj in registry.items() if getattr(obj, "__module__", "").startswith("verl_espo."))

platform = sys.modules.get("verl.plugin.platform.platform_manager")
core_algos = sys.modules.get("verl.trainer.ppo.core_algos")
replica = sys.modules.get("verl.workers.rollout.replica")
trainer_base = sys.modules.get("verl.trainer.ppo.v1.trainer_base")
plugin = sys.modules.get("verl_espo._plugin")
print(json.dumps({
    "platform": ours(platform.PlatformRegistry._platforms) if platform else [],
    "losses": ours(core_algos.POLICY_LOSS_REGISTRY) if core_algos else [],
    "rollout": ["hf"] if replica and "hf" in replica.RolloutReplicaRegistry._registry else [],
    "trainer": ours(trainer_base.TRAINER_REGISTRY) if trainer_base else [],
    "failed": None if plugin is None else sorted(plugin.FAILED),
}))
"""

# With VERL_USE_EXTERNAL_PLUGINS=none veRL loads no plugin: check that veRL is stock, break the named veRL
# internals, then load the plugin's entry point the way `verl/__init__.py` does.
BREAK_THEN_LOAD = """
import importlib, sys
import verl
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
assert "verl_espo._plugin" not in sys.modules and "espo" not in POLICY_LOSS_REGISTRY, "plugins were not disabled"
print("stock veRL before loading the plugin")
for path in {broken!r}:
    module, name = path.rsplit(".", 1)
    delattr(importlib.import_module(module), name)
from importlib.metadata import entry_points
(entry_point,) = [ep for ep in entry_points(group="verl.plugins") if ep.name == "verl_espo"]
entry_point.load()
"""

UNSUPPORTED_VERSION = """
import importlib.metadata as md
real = md.version
md.version = lambda name: "0.10.2" if name == "verl" else real(name)
import verl
"""

#: Fresh-interpreter scenarios: name -> (code, environment). They run concurrently (each imports veRL).
SCENARIOS: dict[str, tuple[str, dict[str, str]]] = {
    "stock": ("import verl\n" + PROBE, {}),
    # veRL moves the platform registry and renames its sync trainer.
    "broken_platform_trainer": (
        BREAK_THEN_LOAD.format(broken=["verl.plugin.platform.PlatformRegistry", "verl.trainer.ppo.v1.PPOTrainerSync"])
        + PROBE,
        {"VERL_USE_EXTERNAL_PLUGINS": "none"},
    ),
    # veRL drops its private rollout registry and renames register_policy_loss; on the cpu platform, which
    # then also installs its process-group and engine hooks.
    "broken_rollout_losses": (
        BREAK_THEN_LOAD.format(
            broken=["verl.workers.rollout.base._ROLLOUT_REGISTRY", "verl.trainer.ppo.core_algos.register_policy_loss"]
        )
        + PROBE,
        {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_PLATFORM": "cpu"},
    ),
    "unsupported_version": (UNSUPPORTED_VERSION + PROBE, {}),
    # A user script that imports the plugin's config classes before anything of veRL's.
    "config_first": ("from verl_espo.config import ESPOConfig\n" + PROBE, {}),
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """``scenario(name)`` -> the finished ``CompletedProcess``; all scenarios start together on first use."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    logs = tmp_path_factory.mktemp("registration")
    running = {}
    for name, (code, env) in SCENARIOS.items():
        out, err = open(logs / f"{name}.out", "w+"), open(logs / f"{name}.err", "w+")
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=err, text=True, env={**base_env, **env}
        )
        running[name] = (proc, out, err)
    done: dict[str, subprocess.CompletedProcess] = {}

    def result(name: str) -> subprocess.CompletedProcess:
        if name not in done:
            proc, out, err = running[name]
            proc.wait(timeout=600)
            out.seek(0), err.seek(0)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
        return done[name]

    yield result
    for proc, out, err in running.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close(), err.close()


def registered(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "verl-espo: the '" in line]


def test_import_verl_registers_every_piece(scenario):
    proc = scenario("stock")
    found = registered(proc)
    assert found["failed"] == [] and not error_lines(proc.stderr), proc.stderr[-3000:]
    assert found["platform"] == ["cpu"]
    assert "espo" in found["losses"]
    assert found["rollout"] == ["hf"]
    assert "plugin_sync" in found["trainer"]


def test_broken_platform_and_trainer_leave_the_losses_and_rollout_registered(scenario):
    proc = scenario("broken_platform_trainer")
    found = registered(proc)
    assert found["failed"] == ["platform", "trainer"]
    assert found["platform"] == [] and found["trainer"] == []
    assert "espo" in found["losses"] and found["rollout"] == ["hf"]
    errors = error_lines(proc.stderr)
    assert len(errors) == 2, proc.stderr[-3000:]
    for piece, missing in (("platform", "PlatformRegistry"), ("trainer", "PPOTrainerSync")):
        (line,) = [e for e in errors if f"the '{piece}' piece" in e]
        assert line.startswith("ERROR"), line
        assert f"veRL {VERL_VERSION}" in line and f"ImportError: cannot import name '{missing}'" in line, line
        assert f"verl_espo/{piece}/" in line.replace("\\", "/"), line  # the plugin's line that touched veRL
        assert "docs/verl_internals.md" in line


def test_broken_rollout_registry_and_loss_registry_leave_the_platform_and_trainer_registered(scenario):
    """The trainer reads the losses' table of inputs from ``verl_espo.loss_inputs``, not from the losses, so a
    broken loss registry leaves it registered; the platform depends on neither."""
    proc = scenario("broken_rollout_losses")
    found = registered(proc)
    assert found["failed"] == ["losses", "rollout"]
    assert found["platform"] == ["cpu"]
    assert found["losses"] == [] and found["rollout"] == []
    assert "plugin_sync" in found["trainer"]
    errors = error_lines(proc.stderr)
    for piece, missing in (("losses", "register_policy_loss"), ("rollout", "_ROLLOUT_REGISTRY")):
        (line,) = [e for e in errors if f"the '{piece}' piece" in e]
        assert f"veRL {VERL_VERSION}" in line and f"cannot import name '{missing}'" in line, line


def test_importing_the_config_classes_first_registers_every_piece(scenario):
    """`verl_espo.config` imports veRL, which loads the plugin, whose losses import `verl_espo.config.loss`:
    without veRL imported first that import found the module half-initialised and two pieces failed."""
    proc = scenario("config_first")
    found = registered(proc)
    assert found["failed"] == [] and not error_lines(proc.stderr), proc.stderr[-3000:]
    assert "espo" in found["losses"] and "plugin_sync" in found["trainer"]


def test_disabling_plugins_leaves_verl_stock(scenario):
    for name in ("broken_platform_trainer", "broken_rollout_losses"):
        proc = scenario(name)
        assert "stock veRL before loading the plugin" in proc.stdout, proc.stderr[-3000:]


def test_unsupported_verl_version_is_reported_not_swallowed(scenario):
    proc = scenario("unsupported_version")
    found = registered(proc)
    assert found["failed"] is None  # the version check raised: veRL swallowed it, nothing registered
    assert found["losses"] == found["platform"] == found["rollout"] == found["trainer"] == []
    assert "verl-espo supports veRL" in proc.stderr and "found veRL 0.10.2" in proc.stderr
    assert not error_lines(proc.stderr)  # no piece was tried


def test_direct_import_with_unsupported_verl_raises_readably(monkeypatch):
    from verl_espo import _compat
    from verl_espo._compat import UnsupportedVerlVersion, check_verl_version

    with pytest.raises(UnsupportedVerlVersion, match=r"supports veRL .*0\.9\.1.* but found veRL 0\.8\.5"):
        check_verl_version("0.8.5")
    monkeypatch.setattr(_compat, "installed_verl_version", lambda: None)
    with pytest.raises(UnsupportedVerlVersion, match="no veRL installation"):
        check_verl_version()
    assert check_verl_version("0.9.1") == "0.9.1"


# ----------------------------------------------------------------------------- register_pieces, in process
@pytest.fixture
def fake_pieces(tmp_path, monkeypatch):
    """Three importable modules: two record their import in ``sys.modules['_trace']``, one raises."""
    package = tmp_path / "fake_pieces"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("first", "last"):
        (package / f"{name}.py").write_text(f"import sys\nsys.modules['_trace'].append({name!r})\n")
    (package / "broken.py").write_text("import sys\n\nraise RuntimeError('veRL moved a thing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trace: list[str] = []
    monkeypatch.setitem(sys.modules, "_trace", trace)
    yield trace
    for name in [m for m in sys.modules if m.startswith("fake_pieces")]:
        del sys.modules[name]


def test_register_pieces_reports_a_failure_and_goes_on(fake_pieces, caplog):
    from verl_espo._compat import register_pieces

    pieces = [("first", "fake_pieces.first"), ("broken", "fake_pieces.broken"), ("last", "fake_pieces.last")]
    with caplog.at_level(logging.DEBUG, logger="verl_espo"):
        failed = register_pieces(pieces, "0.9.7")
    assert fake_pieces == ["first", "last"]  # in order, the one after the failure included
    assert list(failed) == ["broken"] and isinstance(failed["broken"], RuntimeError)
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = error.getMessage()
    assert "the 'broken' piece (fake_pieces.broken)" in message and "veRL 0.9.7" in message
    assert "RuntimeError: veRL moved a thing" in message and "broken.py:3" in message
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.exc_info is not None  # the full traceback, for `VERL_LOGGING_LEVEL=DEBUG`-style digging


def test_register_pieces_with_nothing_broken_logs_nothing(fake_pieces, caplog):
    from verl_espo._compat import register_pieces

    with caplog.at_level(logging.DEBUG, logger="verl_espo"):
        assert register_pieces([("first", "fake_pieces.first"), ("last", "fake_pieces.last")], "0.9.1") == {}
    assert fake_pieces == ["first", "last"] and not caplog.records


def test_the_plugin_registers_the_platform_first():
    """veRL's FSDP engine resolves the platform when imported (the trainer imports it), so with
    ``VERL_PLATFORM=cpu`` the ``cpu`` platform must be registered before the trainer piece runs. Read from the
    source: importing ``verl_espo._plugin`` would register everything."""
    import ast
    from pathlib import Path

    import verl_espo

    tree = ast.parse((Path(verl_espo.__file__).parent / "_plugin.py").read_text())
    (pieces,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "PIECES"
    ]
    names = [piece for piece, _ in pieces]
    assert names[0] == "platform" and sorted(names) == [
        "checkpoint_engine",
        "losses",
        "platform",
        "rollout",
        "trainer",
        "vllm_cpu",
    ]
    assert all(module == f"verl_espo.{piece}" for piece, module in pieces)
