"""Numerics shared by both modes (pure NumPy/SciPy: no datamodels, no I/O).

``batched_fit`` (Levenberg-Marquardt over many small problems at once),
``optimal`` (Horne-weighted row fits), ``robust`` (quantiles, MAD scatter,
clipped polynomial fits, NaN-aware boxcar), ``gaussian`` (widths and intervals).
"""
