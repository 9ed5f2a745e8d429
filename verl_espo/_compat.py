"""The veRL version check, run before anything registers itself in veRL, and the per-piece registration.

veRL imports plugin entry points inside ``try: ... except Exception`` and logs failures at DEBUG only, so
the plugin reports its own failures at ERROR: one line per piece that did not register, naming the piece
and the veRL version, while the other pieces still register (:func:`register_pieces`).
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

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


#: Where the veRL internals each piece relies on are listed, with the upstream change that would remove each.
INTERNALS_DOC = "docs/verl_internals.md"


def _failure_location(exc: BaseException) -> str:
    """`` (at file:line)`` of the plugin's innermost line in the traceback (where it touched veRL), else the
    innermost line; empty if there is none."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    package = Path(__file__).resolve().parent
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(package)]
    last = (ours or frames)[-1] if frames else None
    return f" (at {last.filename}:{last.lineno})" if last else ""


def register_piece(piece: str, module: str, verl_version: str) -> Exception | None:
    """Import ``module``, which registers one piece of the plugin in veRL; return None, or the exception.

    A failure is logged at ERROR with the piece, the veRL version, the exception and the line that raised
    it (the full traceback at DEBUG), and is not raised: one piece broken by a veRL change must not stop
    the others from registering.
    """
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure of one piece is reported, never propagated
        where = _failure_location(exc)
        logger.error(
            "verl-espo: the %r piece (%s) did not register with veRL %s: %s: %s%s. The other pieces still "
            "register; runs that use this one will fail. Every veRL internal the plugin relies on is listed in %s.",
            piece,
            module,
            verl_version,
            type(exc).__name__,
            exc,
            where,
            INTERNALS_DOC,
        )
        logger.debug("verl-espo: traceback of the %r piece's failure", piece, exc_info=exc)
        return exc
    return None


def register_pieces(pieces: Sequence[tuple[str, str]], verl_version: str) -> dict[str, Exception]:
    """Register each ``(piece, module)`` in order with :func:`register_piece`; return the failures by piece."""
    failures = {}
    for piece, module in pieces:
        error = register_piece(piece, module, verl_version)
        if error is not None:
            failures[piece] = error
    return failures
