"""h2mv-hybrid: differentiable hybrid hydrology with the H2MV model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("h2mv-hybrid")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
