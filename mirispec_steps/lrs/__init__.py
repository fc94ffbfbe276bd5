"""MIRI LRS: the box and optimal extraction steps, their pipeline, model layer and algorithms.

- ``box_step``, ``optimal_step``, ``pipeline``: the stpipe steps and pipeline;
- ``box``, ``optimal``: the model layer (exposure and parameters to x1d);
- ``exposure``: the adapter that reads LRS datamodels (region, wavelengths,
  pixels, source trace);
- ``references``: extract1d, apcorr and psf reference files;
- ``plots``: diagnostic figures;
- ``core``: the pure-NumPy algorithms (apertures, background, box sums,
  aperture correction, PSF profiles, trace fitting).
"""
