"""Plugin registration through the ``verl.plugins`` entry point, checked in fresh interpreters.

veRL swallows entry-point import errors (it logs them at DEBUG), so a broken plugin would only show up as
"Unsupported loss mode: espo" deep inside a run. These tests import ``verl`` and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=300
    )


REGISTERED = """
    import verl
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.plugin.platform import PlatformRegistry
    print("espo" in POLICY_LOSS_REGISTRY, get_trainer_cls("espo_sync").__name__, PlatformRegistry.get("cpu").__name__)
"""


def test_import_verl_registers_the_loss_trainer_and_platform():
    proc = run_python(REGISTERED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["True", "ESPOTrainerSync", "PlatformCPU"]


def test_disabling_plugins_leaves_verl_stock():
    proc = run_python(
        """
        import verl
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
        print("espo" in POLICY_LOSS_REGISTRY)
        """,
        VERL_USE_EXTERNAL_PLUGINS="none",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "False"


def test_unsupported_verl_version_is_reported_not_swallowed():
    proc = run_python(
        """
        import importlib.metadata as md
        real = md.version
        md.version = lambda name: "0.10.2" if name == "verl" else real(name)
        import verl
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
        print("espo" in POLICY_LOSS_REGISTRY)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "False"
    assert "verl-espo supports veRL" in proc.stderr and "found veRL 0.10.2" in proc.stderr


def test_direct_import_with_unsupported_verl_raises_readably(monkeypatch):
    from verl_espo import _compat
    from verl_espo._compat import UnsupportedVerlVersion, check_verl_version

    with pytest.raises(UnsupportedVerlVersion, match=r"supports veRL .*0\.9\.1.* but found veRL 0\.8\.5"):
        check_verl_version("0.8.5")
    monkeypatch.setattr(_compat, "installed_verl_version", lambda: None)
    with pytest.raises(UnsupportedVerlVersion, match="no veRL installation"):
        check_verl_version()
    assert check_verl_version("0.9.1") == "0.9.1"


def test_verl_hooks_the_plugin_relies_on_exist():
    """Fail loudly if a veRL release moves a hook (the version pin should prevent it)."""
    import inspect

    import verl  # noqa: F401
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils import losses

    assert hasattr(ActorRolloutRefWorker, "set_loss_fn")
    assert list(inspect.signature(losses.ppo_loss).parameters) == ["config", "model_output", "data", "dp_group"]
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    for name in ("on_init_end", "_update_actor", "_compute_old_log_prob"):
        assert hasattr(PPOTrainer, name), name
