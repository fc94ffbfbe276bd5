"""The one x1d builder shared by every extraction step.

Takes extracted sums per spectral element and writes them in jwst's x1d
format: ``SpecModel`` tables with jwst's columns and units inside a
``MultiSpecModel`` (one spectrum per exposure) or a ``TSOMultiSpecModel``
(one row per integration), readable by jwst's ``combine_1d``, specutils and
jdaviz.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from asdf.tags.core.ndarray import asdf_datatype_to_numpy_dtype
from jwst.extract_1d.spec_wcs import create_spectral_wcs
from stdatamodels.jwst import datamodels
from stdatamodels.util import get_envar_as_boolean

from mirispec_steps.flags import DO_NOT_USE

__all__ = [
    "SpectrumColumns",
    "SpectrumPlacement",
    "build_x1d",
    "column_units",
    "describe_spectrum",
    "first_integration",
    "make_spec_model",
    "make_tso_spec_model",
    "make_x1d_model",
    "restore_validation",
    "spec_model_from_values",
    "spectrum_values",
]

log = logging.getLogger(__name__)


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


def spectrum_values(
    columns: SpectrumColumns,
    pixel_solid_angle: float | None,
    correction: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """
    x1d column values in jwst's units: FLUX in Jy, SURF_BRIGHT in MJy/sr.

    Works element-wise, so the arrays in ``columns`` may be 1-D (one
    spectrum) or 2-D ``(n_integrations, n_elements)`` (a time series).

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
    dict
        Column name to array, the keys being jwst's x1d column names.
    """
    shape = np.shape(columns.flux)
    npix = np.where(columns.npixels > 0, columns.npixels, 1.0)
    scale = 1.0 if pixel_solid_angle is None else pixel_solid_angle * 1.0e6
    factor = np.ones(shape) if correction is None else correction
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
        surf = np.zeros(shape)
        sb_vars = [np.zeros(shape)] * 3
    background = columns.background / npix
    b_vars = [
        v / npix**2 for v in (columns.bkg_var_poisson, columns.bkg_var_rnoise, columns.bkg_var_flat)
    ]
    dq = np.zeros(shape, dtype=np.uint32)
    if columns.dq is not None:
        dq |= columns.dq.astype(np.uint32)
    dq[np.isnan(flux)] |= DO_NOT_USE
    return {
        "WAVELENGTH": np.broadcast_to(columns.wavelength, shape),
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
        "NPIXELS": np.broadcast_to(columns.npixels, shape),
    }


def column_units(pixel_solid_angle: float | None) -> dict[str, str]:
    """
    Units of the x1d columns (lower-case names), calibrated or not.

    Parameters
    ----------
    pixel_solid_angle : float or None
        None when the data are not flux calibrated.

    Returns
    -------
    dict
        Column name to unit string.
    """
    calibrated = pixel_solid_angle is not None
    flux_unit = "Jy" if calibrated else "DN/s"
    sb_unit = "MJy/sr" if calibrated else "DN/s"
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
        units[name] = "Jy^2" if calibrated else "DN^2 / s^2"
    for name in (
        "sb_var_poisson",
        "sb_var_rnoise",
        "sb_var_flat",
        "bkgd_var_poisson",
        "bkgd_var_rnoise",
        "bkgd_var_flat",
    ):
        units[name] = "MJy^2 / sr^2" if calibrated else "DN^2 / s^2"
    return units


def first_integration(columns: SpectrumColumns) -> SpectrumColumns:
    """
    The first integration's columns as 1-D arrays (a single exposure, or a TSO template).

    Parameters
    ----------
    columns : SpectrumColumns
        Columns with 1-D or ``(n_int, n_elements)`` arrays.

    Returns
    -------
    SpectrumColumns
        1-D columns.
    """
    fields = {
        name: (value[0] if np.ndim(value) == 2 else value)
        for name, value in vars(columns).items()
        if isinstance(value, np.ndarray)
    }
    return SpectrumColumns(**{**vars(columns), **fields})


def make_spec_model(
    columns: SpectrumColumns,
    pixel_solid_angle: float | None,
    correction: np.ndarray | None = None,
    spec_class=datamodels.SpecModel,
) -> datamodels.SpecModel:
    """
    One x1d spectrum in jwst's units: FLUX in Jy, SURF_BRIGHT in MJy/sr.

    Parameters
    ----------
    columns : SpectrumColumns
        Sums in MJy/sr x pixels (or DN/s when ``pixel_solid_angle`` is None),
        1-D arrays.
    pixel_solid_angle : float, ndarray or None
        Steradians per unit of NPIXELS, per spectrum or per element (None:
        not flux calibrated).
    correction : ndarray or None
        Aperture correction.
    spec_class : type
        ``SpecModel``, or ``MRSSpecModel`` for MRS (its residual-fringe
        columns are NaN, as jwst writes them when not fitted).

    Returns
    -------
    SpecModel
        The spectrum.
    """
    values = spectrum_values(columns, pixel_solid_angle, correction)
    return spec_model_from_values(values, column_units(pixel_solid_angle), spec_class)


def spec_model_from_values(
    values: dict, units: dict, spec_class=datamodels.SpecModel
) -> datamodels.SpecModel:
    """
    One spectrum from column values; the columns not given are NaN.

    Parameters
    ----------
    values : dict
        jwst column name (upper case) to ``(K,)`` array.
    units : dict
        Lower-case column name to unit (as :func:`column_units`); the
        residual-fringe columns of ``MRSSpecModel`` take the units of their
        counterparts.
    spec_class : type
        ``SpecModel`` or ``MRSSpecModel``.

    Returns
    -------
    SpecModel
        The spectrum, built without validation (see :func:`restore_validation`).
    """
    dtype = _spec_table_dtype(spec_class)
    table = np.zeros(np.size(values["FLUX"]), dtype=dtype)
    for name in dtype.names:
        if name not in values:
            table[name] = np.nan
    for name, value in values.items():
        table[name] = value
    spec = _unvalidated(spec_class, spec_table=table)
    units = dict(units)
    if "RF_FLUX" in dtype.names:
        units.update(
            rf_flux=units["flux"],
            rf_surf_bright=units["surf_bright"],
            rf_background=units["background"],
        )
    for name, unit in units.items():
        spec.spec_table.columns[name].unit = unit
    return spec


_TIME_COLUMNS = {
    "MJD-BEG": "int_start_MJD_UTC",
    "MJD-AVG": "int_mid_MJD_UTC",
    "MJD-END": "int_end_MJD_UTC",
    "TDB-BEG": "int_start_BJD_TDB",
    "TDB-MID": "int_mid_BJD_TDB",
    "TDB-END": "int_end_BJD_TDB",
}


def make_tso_spec_model(
    columns: SpectrumColumns,
    pixel_solid_angle: float | None,
    correction: np.ndarray | None,
    template: datamodels.SpecModel,
    input_model,
) -> datamodels.TSOSpecModel:
    """
    A time series of spectra as one ``TSOSpecModel`` table, built directly.

    Equivalent to jwst's ``make_tso_specmodel`` on one ``SpecModel`` per
    integration followed by ``populate_time_keywords``, without creating a
    model per integration (which dominates the cost for long series).

    Parameters
    ----------
    columns : SpectrumColumns
        2-D ``(n_integrations, n_elements)`` sums (wavelength may be 1-D).
    pixel_solid_angle : float or None
        Steradians per pixel (None: not flux calibrated).
    correction : ndarray or None
        Aperture correction, same shape as the sums.
    template : SpecModel
        Carries the per-spectrum metadata (name, position, limits, ...)
        shared by all integrations.
    input_model : DataModel
        The exposure: segment number and INT_TIMES.

    Returns
    -------
    TSOSpecModel
        One row per integration with vector columns.
    """
    values = spectrum_values(columns, pixel_solid_angle, correction)
    n_int, n_elements = values["FLUX"].shape
    tso = _unvalidated(datamodels.TSOSpecModel)
    datatype = tso.schema["properties"]["spec_table"]["datatype"]
    defaults = tso.schema["properties"]["spec_table"]["default"]
    dtype = []
    for column in datatype:
        numpy_type = asdf_datatype_to_numpy_dtype(column["datatype"])
        if column["name"] in values:
            dtype.append((column["name"], numpy_type, (n_elements,)))
        else:
            dtype.append((column["name"], numpy_type))
    table = np.empty(n_int, dtype=dtype)
    for column, default in zip(datatype, defaults, strict=True):
        name = column["name"]
        if name in values:
            table[name] = values[name]
            continue
        value = getattr(template, name.lower(), None)
        table[name] = default if value is None else value
    table["N_ALONGDISP"] = n_elements
    table["SEGMENT"] = input_model.meta.exposure.segment_number or 1
    table["INT_NUM"] = np.arange(1, n_int + 1)
    for name in _TIME_COLUMNS:
        table[name] = np.nan
    time_scale = _fill_times(table, input_model, n_int)
    tso.spec_table = table
    for name, unit in column_units(pixel_solid_angle).items():
        tso.spec_table.columns[name].unit = unit
    for name in _TIME_COLUMNS:
        tso.spec_table.columns[name].unit = "d"
    tso.update(template)
    if getattr(template.meta, "wcs", None) is not None:
        tso.meta.wcs = template.meta.wcs
    if time_scale:
        tso.time_scale = time_scale
    return tso


def _fill_times(table, input_model, n_int) -> str | None:
    """Integration numbers and times from INT_TIMES (jwst's rules), vectorised."""
    int_times = getattr(input_model, "int_times", None)
    if int_times is None or len(int_times) == 0:
        log.warning("INT_TIMES table not found - time keywords will not be populated.")
        return None
    exposure = input_model.meta.exposure
    first = (exposure.integration_start or 1) - 1
    last = (exposure.integration_end or exposure.nints or n_int) - 1
    numbers = np.asarray(int_times["integration_number"])
    if n_int > len(numbers) or first < numbers[0] - 1 or last > numbers[-1] - 1:
        log.warning(
            "Not using the INT_TIMES table because it does not include rows for all "
            "integrations in the data."
        )
        return None
    rows = np.arange(n_int) + first - (numbers[0] - 1)
    table["INT_NUM"] = numbers[rows]
    for column, source in _TIME_COLUMNS.items():
        table[column] = np.asarray(int_times[source])[rows]
    return "UTC"


@dataclass(frozen=True)
class SpectrumPlacement:
    """
    Where a spectrum was extracted: sky position, aperture limits, orientation, name.

    Attributes
    ----------
    ra, dec : float or None
        Sky position of the aperture centre (degrees).
    limits : tuple of float
        ``(lower, upper, first, last)``: mean cross-dispersion limits and the
        first and last dispersion pixel, 0-indexed (stored 1-indexed).
    dispaxis : int
        1 or 2.
    name : str or None
        Slit or channel name recorded in the spectrum.
    source_type : str or None
        ``POINT`` or ``EXTENDED`` (SRCTYPE of the spectrum), when known.
    """

    ra: float | None
    dec: float | None
    limits: tuple[float, float, float, float]
    dispaxis: int
    name: str | None = None
    source_type: str | None = None


def describe_spectrum(spec, input_model, placement: SpectrumPlacement) -> None:
    """
    Fill a spectrum's metadata as jwst does (position, limits, detector).

    Parameters
    ----------
    spec : SpecModel
        The spectrum to describe (updated in place).
    input_model : DataModel
        The exposure it was extracted from.
    placement : SpectrumPlacement
        Where it was extracted.
    """
    wavelength = np.asarray(spec.spec_table["WAVELENGTH"])
    finite = np.isfinite(wavelength)
    ra, dec = placement.ra, placement.dec
    if ra is not None and finite.sum() > 1:
        spec.meta.wcs = create_spectral_wcs(ra, dec, wavelength)
    spec.slit_ra, spec.slit_dec = ra, dec
    spec.spectral_order = input_model.meta.wcsinfo.spectral_order or 1
    spec.dispersion_direction = placement.dispaxis
    spec.detector = input_model.meta.instrument.detector
    spec.position_angle = input_model.meta.aperture.position_angle
    if placement.name and placement.name != "ANY":
        spec.name = placement.name
    if placement.source_type in ("POINT", "EXTENDED"):
        spec.source_type = placement.source_type
    lower, upper, first, last = placement.limits
    if placement.dispaxis == 2:
        spec.extraction_xstart, spec.extraction_xstop = lower + 1, upper + 1
        spec.extraction_ystart, spec.extraction_ystop = first + 1, last + 1
    else:
        spec.extraction_xstart, spec.extraction_xstop = first + 1, last + 1
        spec.extraction_ystart, spec.extraction_ystop = lower + 1, upper + 1


def build_x1d(
    input_model,
    columns: SpectrumColumns,
    pixel_solid_angle: float | None,
    placement: SpectrumPlacement,
    correction: np.ndarray | None = None,
    time_series: bool = False,
):
    """
    The x1d of one source: a ``MultiSpecModel``, or a ``TSOMultiSpecModel`` for a time series.

    Parameters
    ----------
    input_model : DataModel
        The exposure (primary metadata, INT_TIMES).
    columns : SpectrumColumns
        ``(n_int, n_elements)`` sums (``n_int`` is 1 for a single image).
    pixel_solid_angle : float or None
        Steradians per pixel (None: not flux calibrated).
    placement : SpectrumPlacement
        Where the spectrum was extracted.
    correction : ndarray or None
        Aperture correction, shaped like the sums.
    time_series : bool
        One spectrum per integration (x1dints).

    Returns
    -------
    MultiSpecModel or TSOMultiSpecModel
        The product; its spectrum is ``x1d.spec[0]``.
    """
    first = first_integration(columns)
    if time_series:
        template = make_spec_model(first, pixel_solid_angle)
        describe_spectrum(template, input_model, placement)
        spec = make_tso_spec_model(columns, pixel_solid_angle, correction, template, input_model)
    else:
        spec = make_spec_model(
            first, pixel_solid_angle, None if correction is None else correction[0]
        )
        describe_spectrum(spec, input_model, placement)
    return make_x1d_model(input_model, [spec], time_series=time_series)


def make_x1d_model(input_model, spectra: list, time_series: bool, container=None):
    """
    Wrap spectra into jwst's x1d container.

    Parameters
    ----------
    input_model : DataModel
        The exposure (its primary metadata is copied).
    spectra : list of SpecModel or TSOSpecModel
        One ``SpecModel`` per source/channel, or for a time series one
        ``TSOSpecModel`` per source (see :func:`make_tso_spec_model`).
    time_series : bool
        Build a ``TSOMultiSpecModel`` (x1dints), keeping INT_TIMES.
    container : type or None
        Container class for single spectra (default ``MultiSpecModel``;
        ``MRSMultiSpecModel`` for MRS).

    Returns
    -------
    MultiSpecModel or TSOMultiSpecModel
        The x1d product.
    """
    if time_series:
        output = _unvalidated(datamodels.TSOMultiSpecModel)
        output.update(input_model, only="PRIMARY")
        if getattr(input_model, "int_times", None) is not None and len(input_model.int_times):
            output.int_times = input_model.int_times.copy()
    else:
        output = _unvalidated(container or datamodels.MultiSpecModel)
        output.update(input_model, only="PRIMARY")
    for spec in spectra:
        output.spec.append(spec)
    output.meta.wcs = None
    output.meta.target.source_type = None
    for model in (output, *spectra):
        restore_validation(model)
    return output


def _unvalidated(model_class, **kwargs):
    """A new model that skips schema validation while the builder fills it.

    Validating each attribute assignment re-walks the schema and costs more
    than the extraction itself; the builder writes schema-conformant values,
    and :func:`restore_validation` switches validation back on.
    """
    return model_class(validate_on_assignment=False, **kwargs)


def restore_validation(model) -> None:
    """Give a model built by this module the default validate-on-assignment behaviour.

    Parameters
    ----------
    model : DataModel
        A model made with validation switched off.
    """
    model._validate_on_assignment = get_envar_as_boolean("VALIDATE_ON_ASSIGNMENT", True)


@functools.cache
def _spec_table_dtype(spec_class=datamodels.SpecModel):
    return spec_class().get_dtype("spec_table")
