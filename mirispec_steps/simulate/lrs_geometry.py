"""The package's own MIRI LRS geometry, exposed as a real gwcs WCS.

The WCS has jwst's LRS frames (``detector`` -> ``alpha_beta`` -> ``v2v3`` ->
``world``) and is built like jwst's ``assign_wcs.miri.lrs``: the trace is an
x shift tabulated against detector row, the wavelength a tabulated function
of row, alpha is the along-slit offset from the trace in arcsec and beta is
zero. Only the numbers differ: a smooth parametric trace and dispersion
plausible for P750L (about 4.7-14.5 micron over 387 rows, trace within a pixel
of vertical) and an ideal linear focal plane (jwst's ``IdealToV2V3``) instead
of the imager distortion. Synthetic and real data therefore go through the
same code path in every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.modeling import bind_bounding_box, models
from gwcs.wcs import WCS

from mirispec_steps.simulate.shared import spectral_frames

__all__ = ["LrsGeometry", "build_lrs_wcs"]


@dataclass
class LrsGeometry:
    """
    Parametric LRS trace and dispersion.

    Attributes
    ----------
    x_ref : float
        Column of the slit centre at ``y_ref`` (0-indexed).
    y_ref : float
        Reference row.
    row_range : (float, float)
        First and last row of the spectrum (bounding box edges).
    half_width : float
        Half width of the bounding box in columns.
    pixel_scale : float
        Arcsec per pixel along the slit.
    wave_short, wave_long : float
        Wavelength (micron) at the top and bottom row.
    dispersion_power : float
        Shape of the dispersion: wavelength grows as ``t**power`` from the
        top row (t=0) to the bottom row (t=1); above 1 gives the prism's
        higher dispersion at short wavelengths.
    trace_slope, trace_curvature : float
        Trace x shift ``slope * (y - y_ref) + curvature * (y - y_ref)**2``.
    """

    x_ref: float = 324.0
    y_ref: float = 300.0
    row_range: tuple[float, float] = (6.5, 393.5)
    half_width: float = 22.0
    pixel_scale: float = 0.11
    wave_short: float = 4.7
    wave_long: float = 14.5
    dispersion_power: float = 1.25
    trace_slope: float = 0.002
    trace_curvature: float = 4.0e-6

    def wavelength(self, y: np.ndarray) -> np.ndarray:
        """Wavelength (micron) of row ``y``; NaN outside the spectrum."""
        top, bottom = self.row_range[1], self.row_range[0]
        t = (top - np.asarray(y, dtype=float)) / (top - bottom)
        wave = self.wave_short + (self.wave_long - self.wave_short) * np.clip(t, 0, 1) ** (
            self.dispersion_power
        )
        return np.where((t >= 0) & (t <= 1), wave, np.nan)

    def trace_shift(self, y: np.ndarray) -> np.ndarray:
        """Column shift of the trace from ``x_ref`` at row ``y``."""
        dy = np.asarray(y, dtype=float) - self.y_ref
        return self.trace_slope * dy + self.trace_curvature * dy**2

    @property
    def bounding_box(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_low, x_high), (y_low, y_high)) as in jwst (order F)."""
        return (
            (self.x_ref - self.half_width - 0.5, self.x_ref + self.half_width + 0.5),
            self.row_range,
        )


def build_lrs_wcs(model, geometry: LrsGeometry) -> WCS:
    """
    Build the LRS WCS of ``geometry`` for a model's pointing.

    Parameters
    ----------
    model : DataModel
        Supplies ``meta.wcsinfo`` (v2_ref, v3_ref, v3yangle, vparity, ra_ref,
        dec_ref, roll_ref) for the focal-plane and sky transforms.
    geometry : LrsGeometry
        Trace and dispersion.

    Returns
    -------
    gwcs.wcs.WCS
        detector -> alpha_beta -> v2v3 -> world, with inverse and bounding box.
    """
    from jwst.assign_wcs import pointing

    rows = np.linspace(geometry.row_range[0], geometry.row_range[1], 2000)
    shift_model = models.Tabular1D(
        points=rows,
        lookup_table=geometry.trace_shift(rows),
        bounds_error=False,
        fill_value=np.nan,
        name="xshiftref",
    )
    # Tabulate wavelength against row, increasing row order (the inverse needs monotonic values)
    wave_model = models.Tabular1D(
        points=rows,
        lookup_table=geometry.wavelength(rows),
        bounds_error=False,
        fill_value=np.nan,
        name="waveref",
    )
    lam_to_y = models.Tabular1D(
        points=geometry.wavelength(rows)[::-1],
        lookup_table=rows[::-1],
        bounds_error=False,
        fill_value=np.nan,
    )
    wave_model.inverse = lam_to_y

    slit_x = models.Mapping([0], n_inputs=2) - (models.Mapping([1], n_inputs=2) | shift_model)
    alpha = slit_x | models.Shift(-geometry.x_ref) | models.Scale(geometry.pixel_scale)
    beta = models.Mapping([0], n_inputs=2) | models.Const1D(0.0)
    lam = models.Mapping([1], n_inputs=2) | wave_model
    det_to_abl = models.Mapping((0, 1, 0, 1, 0, 1)) | alpha & beta & lam

    alpha_to_x = models.Scale(1.0 / geometry.pixel_scale) | models.Shift(geometry.x_ref)
    add_shift = models.Mapping([0], n_inputs=2) + (models.Mapping([1], n_inputs=2) | shift_model)
    x_back = models.Mapping((0, 2)) | alpha_to_x & lam_to_y | add_shift
    y_back = models.Mapping([2], n_inputs=3) | lam_to_y
    det_to_abl.inverse = models.Mapping((0, 1, 2, 0, 1, 2)) | x_back & y_back
    bind_bounding_box(det_to_abl, geometry.bounding_box, order="F")

    # jwst's IdealToV2V3, written as an affine map so that the WCS serialises to ASDF
    wcsinfo = model.meta.wcsinfo
    angle = np.deg2rad(wcsinfo.v3yangle)
    parity = wcsinfo.vparity
    matrix = np.array(
        [
            [parity * np.cos(angle), np.sin(angle)],
            [-parity * np.sin(angle), np.cos(angle)],
        ]
    )
    ideal = models.AffineTransformation2D(matrix, translation=[wcsinfo.v2_ref, wcsinfo.v3_ref])
    abl_to_v2v3l = ideal & models.Identity(1)
    sky = pointing.v23tosky(model) & models.Identity(1)

    frames = spectral_frames("spec", ("v2v3",))
    detector, focal, v2v3, world = frames.values()
    wcs = WCS([(detector, det_to_abl), (focal, abl_to_v2v3l), (v2v3, sky), (world, None)])
    return wcs
