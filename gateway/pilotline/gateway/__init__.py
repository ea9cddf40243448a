"""pilotline's shell: configuration, wiring, store, sinks, notifications, HTTP API and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pilotline")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
