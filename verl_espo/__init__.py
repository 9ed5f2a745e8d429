"""verl-espo: ESPO (arXiv 2512.00499) and EGSPO (arXiv 2602.03309) for veRL 0.9.x.

Importing this package does not import veRL. veRL loads :mod:`verl_espo._plugin` through the
``verl.plugins`` entry point in every process that imports ``verl``; that module registers the
policy losses, the trainer, the CPU platform and the Hugging Face rollout backend.
"""

__version__ = "0.1.0"

#: veRL versions this release is tested against: ``MIN <= version < MAX``.
SUPPORTED_VERL = (">=0.9.1", "<0.10")

__all__ = ["__version__", "SUPPORTED_VERL"]
