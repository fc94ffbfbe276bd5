"""The one x1d builder shared by every extraction step.

Takes extracted sums per spectral element and writes them in jwst's x1d
format: ``SpecModel`` tables with jwst's columns and units inside a
``MultiSpecModel`` (one spectrum per exposure) or a ``TSOMultiSpecModel``
(one row per integration), readable by jwst's ``combine_1d``, specutils and
jdaviz.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jwst.datamodels.utils.tso_multispec import make_tso_specmodel
from jwst.extract_1d.spec_wcs import create_spectral_wcs
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

__all__ = ["SpectrumColumns", "make_spec_model", "make_x1d_model"]

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]


@dataclass
class SpectrumColumns:
    """
    Extracted quantities of one spectrum, before unit conversion.

    All arrays have one value per spectral element. ``flux`` and its
    variances are aperture sums of surface brightness (MJy/sr x pixels);
    ``background`` is the background summed over the same pixels.

    Attributes
    ----------
    wavelength : ndarray
        Micron.
    flux, var_poisson, var_rnoise, var_flat : ndarray
        Sum and its variance components.
    background, bkg_var_poisson, bkg_var_rnoise, bkg_var_flat : ndarray
        Background sum and its variance components.
    npixels : ndarray
        Sum of aperture weights.
    dq : ndarray or None
        Extra DQ flags per element (DO_NOT_USE is added where flux is NaN).
    surface_brightness : bool
        Fill SURF_BRIGHT (box extraction) or leave it zero (optimal).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    var_flat: np.ndarray
    background: np.ndarray
    bkg_var_poisson: np.ndarray
    bkg_var_rnoise: np.ndarray
    bkg_var_flat: np.ndarray
    npixels: np.ndarray
    dq: np.ndarray | None = None
    surface_brightness: bool = True


def make_spec_model(
    columns: SpectrumColumns,
    pixel_solid_angle: float | None,
    correction: np.ndarray | None = None,
) -> datamodels.SpecModel:
    """
    One x1d spectrum in jwst's units: FLUX in Jy, SURF_BRIGHT in MJy/sr.

    Parameters
    ----------
    columns : SpectrumColumns
        Sums in MJy/sr x pixels (or DN/s when ``pixel_solid_angle`` is None).
    pixel_solid_angle : float or None
        Steradians per pixel; None when the data are not flux calibrated, in
        which case FLUX stays in the input units (as jwst does).
    correction : ndarray or None
        Aperture correction applied to FLUX, SURF_BRIGHT, their errors and
        variances.

    Returns
    -------
    SpecModel
        The spectrum.
    """
    npix = np.where(columns.npixels > 0, columns.npixels, 1.0)
    scale = 1.0 if pixel_solid_angle is None else pixel_solid_angle * 1.0e6
    factor = np.ones_like(columns.flux) if correction is None else correction
    flux = columns.flux * scale * factor
    f_vars = [
        v * (scale * factor) ** 2
        for v in (columns.var_poisson, columns.var_rnoise, columns.var_flat)
    ]
    if columns.surface_brightness:
        surf = columns.flux / npix * factor
        sb_vars = [
            v / npix**2 * factor**2
            for v in (columns.var_poisson, columns.var_rnoise, columns.var_flat)
        ]
    else:
        surf = np.zeros_like(flux)
        sb_vars = [np.zeros_like(flux)] * 3
    background = columns.background / npix
    b_vars = [
        v / npix**2 for v in (columns.bkg_var_poisson, columns.bkg_var_rnoise, columns.bkg_var_flat)
    ]
    dq = np.zeros(flux.shape, dtype=np.uint32)
    if columns.dq is not None:
        dq |= columns.dq.astype(np.uint32)
    dq[np.isnan(flux)] |= DO_NOT_USE

    table = np.zeros(flux.size, dtype=datamodels.SpecModel().get_dtype("spec_table"))
    values = {
        "WAVELENGTH": columns.wavelength,
        "FLUX": flux,
        "FLUX_ERROR": np.sqrt(sum(f_vars)),
        "FLUX_VAR_POISSON": f_vars[0],
        "FLUX_VAR_RNOISE": f_vars[1],
        "FLUX_VAR_FLAT": f_vars[2],
        "SURF_BRIGHT": surf,
        "SB_ERROR": np.sqrt(sum(sb_vars)),
        "SB_VAR_POISSON": sb_vars[0],
        "SB_VAR_RNOISE": sb_vars[1],
        "SB_VAR_FLAT": sb_vars[2],
        "DQ": dq,
        "BACKGROUND": background,
        "BKGD_ERROR": np.sqrt(sum(b_vars)),
        "BKGD_VAR_POISSON": b_vars[0],
        "BKGD_VAR_RNOISE": b_vars[1],
        "BKGD_VAR_FLAT": b_vars[2],
        "NPIXELS": columns.npixels,
    }
    for name, value in values.items():
        table[name] = value
    spec = datamodels.SpecModel(spec_table=table)
    flux_unit = "Jy" if pixel_solid_angle is not None else "DN/s"
    sb_unit = "MJy/sr" if pixel_solid_angle is not None else "DN/s"
    units = {
        "wavelength": "um",
        "flux": flux_unit,
        "flux_error": flux_unit,
        "surf_bright": sb_unit,
        "sb_error": sb_unit,
        "background": sb_unit,
        "bkgd_error": sb_unit,
    }
    for name in ("flux_var_poisson", "flux_var_rnoise", "flux_var_flat"):
        units[name] = "Jy^2" if pixel_solid_angle is not None else "DN^2 / s^2"
    for name in (
        "sb_var_poisson",
        "sb_var_rnoise",
        "sb_var_flat",
        "bkgd_var_poisson",
        "bkgd_var_rnoise",
        "bkgd_var_flat",
    ):
        units[name] = "MJy^2 / sr^2" if pixel_solid_angle is not None else "DN^2 / s^2"
    for name, unit in units.items():
        spec.spec_table.columns[name].unit = unit
    return spec


def describe_spectrum(spec, input_model, ra, dec, limits, dispaxis, slit_name=None) -> None:
    """
    Fill a spectrum's metadata as jwst does (position, limits, detector).

    Parameters
    ----------
    spec : SpecModel
        The spectrum to describe (updated in place).
    input_model : DataModel
        The exposure it was extracted from.
    ra, dec : float or None
        Sky position of the aperture centre.
    limits : tuple of float
        (lower, upper, first, last): mean cross-dispersion limits and the
        first and last dispersion pixel, 0-indexed; stored 1-indexed.
    dispaxis : int
        1 or 2.
    slit_name : str or None
        Name recorded in the spectrum.
    """
    wavelength = np.asarray(spec.spec_table["WAVELENGTH"])
    finite = np.isfinite(wavelength)
    if ra is not None and finite.sum() > 1:
        spec.meta.wcs = create_spectral_wcs(ra, dec, wavelength)
    spec.slit_ra, spec.slit_dec = ra, dec
    spec.spectral_order = input_model.meta.wcsinfo.spectral_order or 1
    spec.dispersion_direction = dispaxis
    spec.detector = input_model.meta.instrument.detector
    spec.position_angle = input_model.meta.aperture.position_angle
    if slit_name and slit_name != "ANY":
        spec.name = slit_name
    lower, upper, first, last = limits
    if dispaxis == 2:
        spec.extraction_xstart, spec.extraction_xstop = lower + 1, upper + 1
        spec.extraction_ystart, spec.extraction_ystop = first + 1, last + 1
    else:
        spec.extraction_xstart, spec.extraction_xstop = first + 1, last + 1
        spec.extraction_ystart, spec.extraction_ystop = lower + 1, upper + 1


def make_x1d_model(input_model, spectra: list, time_series: bool):
    """
    Wrap spectra into jwst's x1d container.

    Parameters
    ----------
    input_model : DataModel
        The exposure (its primary metadata is copied).
    spectra : list of SpecModel
        One per integration for a time series, else one per source/channel.
    time_series : bool
        Build a ``TSOMultiSpecModel`` (x1dints) from the per-integration
        spectra.

    Returns
    -------
    MultiSpecModel or TSOMultiSpecModel
        The x1d product.
    """
    if time_series:
        output = datamodels.TSOMultiSpecModel()
        tso = make_tso_specmodel(spectra, segment=input_model.meta.exposure.segment_number)
        output.update(input_model, only="PRIMARY")
        output.spec.append(tso)
        if getattr(input_model, "int_times", None) is not None and len(input_model.int_times):
            output.int_times = input_model.int_times.copy()
    else:
        output = datamodels.MultiSpecModel()
        output.update(input_model, only="PRIMARY")
        for spec in spectra:
            output.spec.append(spec)
    output.meta.wcs = None
    output.meta.target.source_type = None
    return output
