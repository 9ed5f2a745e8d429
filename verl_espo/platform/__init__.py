"""Device platforms the plugin adds to veRL: ``cpu`` (select with ``VERL_PLATFORM=cpu``)."""

from verl_espo.platform.cpu import PlatformCPU, install

install()

__all__ = ["PlatformCPU", "install"]
