"""Import-only stand-in for a package that the GPU checks import but never use (``benchmarks/gpu/README.md``).

``benchmarks/gpu/prepare.sh`` copies this file to ``.gpu/stubs/<name>/__init__.py`` for each stubbed package
(``ray``: veRL's ``verl/protocol.py`` imports it at module level, and it is ~70 MB). The module takes its name
from where it is copied. Any attribute (``ray.remote``, ``ray.ObjectRef``, ...) and any submodule
(``ray.util.collective``) resolves, so module-level imports, annotations, subclassing and ``isinstance``
checks work; **calling** anything, or instantiating any class, raises :class:`StubbedModuleError`, so no
figure can come from stubbed code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

STUB = True  # lets a check assert that it ran against this stand-in, not the real package


class StubbedModuleError(RuntimeError):
    """Raised when code actually uses a stubbed package at run time."""


def _fail(what: str):
    raise StubbedModuleError(
        f"{what} was called, but {__name__!r} is an import-only stub on this machine "
        "(benchmarks/gpu/import_stub.py): the check touched code that needs the real package"
    )


class _StubMeta(type):
    """Placeholders are classes (usable in annotations, ``isinstance`` and as bases) whose own attributes
    are placeholders too; calling one raises."""

    def __getattr__(cls, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _placeholder(cls.__module__, f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        _fail(f"{cls.__module__}.{cls.__qualname__}")


def _placeholder(module: str, qualname: str) -> type:
    placeholder = _StubMeta(qualname.rsplit(".", 1)[-1], (), {"__module__": module})
    placeholder.__qualname__ = qualname
    return placeholder


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return _placeholder(__name__, name)


class _SubmoduleStubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Every ``<stub>.x.y`` submodule is a module whose attributes are placeholders."""

    def __init__(self, root: str) -> None:
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.STUB = True
        module.__getattr__ = lambda name, prefix=spec.name: (
            (_ for _ in ()).throw(AttributeError(name))
            if name.startswith("__") and name.endswith("__")
            else _placeholder(prefix, name)
        )
        return module

    def exec_module(self, module) -> None:
        pass


sys.meta_path.append(_SubmoduleStubs(__name__))
