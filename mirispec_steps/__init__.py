"""MIRI point-source spectroscopy steps for the JWST calibration pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mirispec_steps")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "LrsBoxExtractStep",
    "LrsExtractPipeline",
    "LrsOptimalExtractStep",
    "MrsCalibrateStep",
    "MrsCentroidStep",
    "MrsExtractStep",
    "MrsPointSourcePipeline",
    "read_centroid",
    "__version__",
]

_STEPS = {
    "LrsBoxExtractStep": "mirispec_steps.lrs_box_extract_step",
    "LrsOptimalExtractStep": "mirispec_steps.lrs_optimal_extract_step",
    "MrsCalibrateStep": "mirispec_steps.mrs_calibrate_step",
    "MrsCentroidStep": "mirispec_steps.mrs_centroid_step",
    "MrsExtractStep": "mirispec_steps.mrs_extract_step",
    "MrsPointSourcePipeline": "mirispec_steps.mrs_point_source_pipeline",
    "LrsExtractPipeline": "mirispec_steps.lrs_extract_pipeline",
    "read_centroid": "mirispec_steps.mrs_centroid",
}


def __getattr__(name):
    # Steps import jwst, which is slow; import them only when asked for.
    if name in _STEPS:
        import importlib

        return getattr(importlib.import_module(_STEPS[name]), name)
    raise AttributeError(f"module 'mirispec_steps' has no attribute {name!r}")
