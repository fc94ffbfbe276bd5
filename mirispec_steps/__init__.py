"""MIRI point-source spectroscopy steps for the JWST calibration pipeline.

The public API: the steps and pipelines (importable from here, registered as
stpipe entry points under the aliases in parentheses) and
:func:`read_centroid`.

- :class:`LrsBoxExtractStep` (``lrs_box_extract``), :class:`LrsOptimalExtractStep`
  (``lrs_optimal_extract``), :class:`LrsExtractPipeline` (``lrs_extract``),
  :class:`LrsPsfStep` (``lrs_psf``: a ``psf`` reference from a bright star);
- :class:`MrsCalibrateStep` (``mrs_calibrate``), :class:`MrsCentroidStep`
  (``mrs_centroid``), :class:`MrsExtractStep` (``mrs_extract``),
  :class:`MrsPointSourcePipeline` (``mrs_point_source``), :class:`MrsPsfStep`
  (``mrs_psf``: an ``mrspsf`` cube from a bright star), :class:`MrsCombineStep`
  (``mrs_combine``: a dither set's x1d spectra combined and the bands stitched);
- :class:`MirispecSpec2Pipeline` (``mirispec_spec2``) and
  :class:`MirispecSpec3Pipeline` (``mirispec_spec3``): jwst's calwebb_spec2/3
  with these extractions.

The classes live in the mode folders (:mod:`mirispec_steps.lrs`,
:mod:`mirispec_steps.mrs`); these top-level names are the stable paths that
parameter files and entry points use.
"""

from mirispec_steps._version import __version__

__all__ = [
    "LrsBoxExtractStep",
    "LrsExtractPipeline",
    "LrsOptimalExtractStep",
    "LrsPsfStep",
    "MirispecSpec2Pipeline",
    "MirispecSpec3Pipeline",
    "MrsCalibrateStep",
    "MrsCentroidStep",
    "MrsCombineStep",
    "MrsExtractStep",
    "MrsPointSourcePipeline",
    "MrsPsfStep",
    "__version__",
    "read_centroid",
]

#: Where each public name is defined (imported on first use: the steps import jwst, which is slow).
_PUBLIC = {
    "LrsBoxExtractStep": "mirispec_steps.lrs.box_step",
    "LrsOptimalExtractStep": "mirispec_steps.lrs.optimal_step",
    "LrsPsfStep": "mirispec_steps.lrs.psf_step",
    "LrsExtractPipeline": "mirispec_steps.lrs.pipeline",
    "MrsCalibrateStep": "mirispec_steps.mrs.calibrate_step",
    "MrsCentroidStep": "mirispec_steps.mrs.centroid_step",
    "MrsCombineStep": "mirispec_steps.mrs.combine_step",
    "MrsExtractStep": "mirispec_steps.mrs.extract_step",
    "MrsPointSourcePipeline": "mirispec_steps.mrs.pipeline",
    "MrsPsfStep": "mirispec_steps.mrs.psf_step",
    "MirispecSpec2Pipeline": "mirispec_steps.jwst_pipelines",
    "MirispecSpec3Pipeline": "mirispec_steps.jwst_pipelines",
    "read_centroid": "mirispec_steps.mrs.centroid",
}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mirispec_steps' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
