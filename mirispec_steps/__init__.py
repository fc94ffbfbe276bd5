"""MIRI point-source spectroscopy steps for the JWST calibration pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mirispec_steps")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["LrsBoxExtractStep", "__version__"]


def __getattr__(name):
    # Steps import jwst, which is slow; import them only when asked for.
    if name == "LrsBoxExtractStep":
        from mirispec_steps.lrs_box_extract_step import LrsBoxExtractStep

        return LrsBoxExtractStep
    raise AttributeError(f"module 'mirispec_steps' has no attribute {name!r}")
