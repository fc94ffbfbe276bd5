"""MIRI MRS: calibration, centroid and extraction steps, their pipeline, model layer and algorithms.

- ``calibrate_step``, ``centroid_step``, ``extract_step``, ``pipeline``,
  ``step``: the stpipe steps, pipeline and their shared input handling;
- ``calibrate``, ``centroid``, ``extract``: the model layer;
- ``exposure`` and ``geometry``: the adapters that read MRS datamodels
  (pixels, variances, centroid solution; slice, alpha, beta and wavelength
  of every pixel), ``maps`` the geometry saved for data without a WCS;
- ``references``: mrsresol, mrspsf, fringe and photom reference files;
- ``plots``: diagnostic figures;
- ``core``: the pure-NumPy algorithms (calibration arithmetic, centroid
  fits, ellipse overlaps, extraction, PSF model, resolving power, spectral grid).
"""
