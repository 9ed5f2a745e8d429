"""The veRL version check, run before anything registers itself in veRL."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

from verl_espo import SUPPORTED_VERL

logger = logging.getLogger("verl_espo")


class UnsupportedVerlVersion(ImportError):
    """Raised when the installed veRL is outside :data:`verl_espo.SUPPORTED_VERL`."""


def installed_verl_version() -> str | None:
    try:
        return version("verl")
    except PackageNotFoundError:
        return None


def check_verl_version(found: str | None = None) -> str:
    """Return the installed veRL version, or raise :class:`UnsupportedVerlVersion` with a readable message.

    veRL swallows exceptions raised by ``verl.plugins`` entry points (it logs them at DEBUG), so the
    message is also logged at ERROR level before raising: a run with the wrong veRL says why the
    ``espo`` loss is missing instead of failing later with "Unsupported loss mode: espo".
    """
    found = installed_verl_version() if found is None else found
    spec = SpecifierSet(",".join(SUPPORTED_VERL))
    if found is None or found not in spec:
        msg = (
            f"verl-espo supports veRL {spec} but found {'no veRL installation' if found is None else 'veRL ' + found}. "
            f"Install a supported release, e.g. `pip install 'verl{spec}'`, or use a verl-espo release built for "
            "your veRL. The ESPO loss, trainer and configs were not registered."
        )
        logger.error(msg)
        raise UnsupportedVerlVersion(msg)
    return found
