"""MRS x1d spectra of a dither set combined per band and stitched (model layer of mrs_combine).

Input: the x1d products of :class:`~mirispec_steps.MrsExtractStep` (one
spectrum per channel, named by band), any number of dithers and grating
settings of one target. Per band, the dithers' spectra share the band's grid
and are combined by :func:`~mirispec_steps.mrs.core.combine.combine_dithers`,
judged on their spectra without residual fringes (each dither's RF_FLUX from
``mrs_extract``, else fitted here with jwst's 1-D code,
:mod:`~mirispec_steps.mrs.core.residual_fringe`); FLUX and RF_FLUX are
combined with the same choices. Channel 3A then has its 1B spectral leak subtracted
(:mod:`~mirispec_steps.mrs.core.spectral_leak`, from both flux columns, as
jwst's ``spectral_leak``), and the bands are joined by
:func:`~mirispec_steps.mrs.core.combine.stitch_bands`.

The product is an ``MRSMultiSpecModel``, the layout of jwst's MRS Spec3
x1d (FLUX and RF_FLUX; read by specutils): the stitched spectrum first
(named ``ALL``), then each band's combination. ``NPIXELS`` is the number of
dithers behind each value (jwst's c1d ``N_INPUT``; the c1d layout has no
RF_FLUX), and a ``mirispec_combination`` record holds every dither's checks,
the residual-fringe fits and the leak correction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from stdatamodels.jwst import datamodels

from mirispec_steps import flags
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.core.combine import CombinedBand, combine_dithers, stitch_bands
from mirispec_steps.mrs.core.residual_fringe import remove_residual_fringes
from mirispec_steps.mrs.core.spectral_leak import LeakCurve, spectral_leak
from mirispec_steps.mrs.geometry import BAND_NAMES
from mirispec_steps.x1d import column_units, restore_validation, spec_model_from_values

__all__ = [
    "BandSpectra",
    "CombineSettings",
    "band_spectra",
    "check_one_target",
    "combine_products",
]

log = logging.getLogger(__name__)

#: Targets further apart than this (arcsec) are different targets.
SAME_TARGET_ARCSEC = 1.0


@dataclass
class CombineSettings:
    """
    Choices of a combination (see :func:`~mirispec_steps.mrs.core.combine.combine_dithers`).

    Attributes
    ----------
    clip_sigma : float
        Per-bin outlier threshold.
    scale_tolerance, scale_sigma : float
        A dither's systematic scale offset limits.
    dither_tolerance : float
        Relative differences between dithers expected beyond their noise
        (residual fringes, PSF model), when judging dithers and outliers.
    overlap : str
        ``cut`` or ``average`` (band overlaps).
    match_scale : bool
        Scale bands to their predecessor in the overlaps.
    pointing_tolerance : float
        Extraction positions further than this (arcsec) from the dithers'
        median are reported.
    residual_fringe : bool
        Judge dithers without their residual fringes and combine RF_FLUX
        (fitted here for dithers whose x1d has none); False: RF_FLUX NaN.
    leak : LeakCurve or None
        Subtract the 1B leak from 3A with this curve (None: no correction).
    """

    clip_sigma: float = 4.0
    scale_tolerance: float = 0.01
    scale_sigma: float = 5.0
    dither_tolerance: float = 0.01
    overlap: str = "cut"
    match_scale: bool = False
    pointing_tolerance: float = 0.1
    residual_fringe: bool = True
    leak: LeakCurve | None = None


@dataclass
class BandSpectra:
    """
    One band's spectra from every dither.

    Attributes
    ----------
    band : str
        ``1A`` ... ``4C``.
    names : list of str
        The product each spectrum comes from.
    wavelength : ndarray
        ``(K,)`` the shared grid.
    flux, error : ndarray
        ``(N, K)`` Jy; NaN where the DQ says DO_NOT_USE.
    rf_flux : ndarray
        ``(N, K)`` each dither's RF_FLUX (NaN where the input has none).
    ra, dec : ndarray
        ``(N,)`` where each was extracted (degrees; NaN when unknown).
    """

    band: str
    names: list
    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    rf_flux: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


def _target(product) -> tuple:
    target = product.meta.target
    return target.catalog_name or target.proposer_name, target.ra, target.dec


def check_one_target(models) -> None:
    """
    Every model of one target, else an error naming the odd one out.

    Parameters
    ----------
    models : list of DataModel
        Exposures or x1d products (``meta.target`` and ``meta.filename``).

    Raises
    ------
    InputDataError
        Two target names, or two target positions more than
        :data:`SAME_TARGET_ARCSEC` apart.
    """
    first = None
    for model in models:
        name = model.meta.filename or "an input"
        target = _target(model)
        if first is None:
            first = (name, target)
            continue
        (first_name, (label, ra, dec)) = first
        if label and target[0] and label != target[0]:
            raise InputDataError(
                f"{name} is of target {target[0]!r}, {first_name} of {label!r}: "
                "combine one target at a time"
            )
        if None not in (ra, dec, target[1], target[2]):
            separation = 3600 * np.hypot((target[1] - ra) * np.cos(np.radians(dec)),
                                         target[2] - dec)  # fmt: skip
            if separation > SAME_TARGET_ARCSEC:
                raise InputDataError(
                    f"{name}'s target is {separation:.1f} arcsec from {first_name}'s: "
                    "combine one target at a time"
                )


def _check_products(products) -> None:
    """Every product an MRS x1d of one target, else an error naming the odd one."""
    for product in products:
        name = product.meta.filename or "an input"
        exposure_type = product.meta.exposure.type
        if exposure_type != "MIR_MRS" or not hasattr(product, "spec"):
            raise InputDataError(
                f"{name} is not an MRS x1d product (EXP_TYPE {exposure_type}, "
                f"{type(product).__name__}): mrs_combine combines the x1d files of mrs_extract"
            )
    check_one_target(products)


def band_spectra(products) -> dict:
    """
    The spectra of every band in the products, grouped by band.

    Parameters
    ----------
    products : list of MultiSpecModel
        MRS x1d products of one target.

    Returns
    -------
    dict
        Band to :class:`BandSpectra`.

    Raises
    ------
    InputDataError
        A product of another mode or target, a spectrum without a band name,
        or dithers of one band whose bins are not at the same wavelengths
        (one may lack bins at the band ends: NaN there).
    """
    _check_products(products)
    grouped: dict[str, list] = {}
    for product in products:
        for spec in product.spec:
            band = str(spec.name or "")
            if len(band) != 2 or band[0] not in "1234" or band[1] not in BAND_NAMES:
                raise InputDataError(
                    f"{product.meta.filename}: a spectrum is named {band!r}, not a band "
                    "(1A ... 4C): mrs_combine combines the x1d files of mrs_extract"
                )
            table = spec.spec_table
            usable = (np.asarray(table["DQ"]) & flags.DO_NOT_USE) == 0
            flux = np.where(usable, np.asarray(table["FLUX"], dtype=float), np.nan)
            error = np.where(usable, np.asarray(table["FLUX_ERROR"], dtype=float), np.nan)
            rf_flux = (
                np.where(usable, np.asarray(table["RF_FLUX"], dtype=float), np.nan)
                if "RF_FLUX" in table.dtype.names
                else np.full(flux.size, np.nan)
            )
            position = (
                np.nan if spec.slit_ra is None else float(spec.slit_ra),
                np.nan if spec.slit_dec is None else float(spec.slit_dec),
            )
            grouped.setdefault(band, []).append(
                (product.meta.filename, np.asarray(table["WAVELENGTH"], float), flux, error,
                 position, rf_flux)
            )  # fmt: skip
    result = {}
    for band, entries in grouped.items():
        grid = _shared_grid([entry[1] for entry in entries])
        shape = (len(entries), grid.size)
        flux, error, rf_flux = (np.full(shape, np.nan) for _ in range(3))
        for row, (name, wavelength, values, errors, _, rf_values) in enumerate(entries):
            index = np.clip(np.searchsorted(grid, wavelength), 0, grid.size - 1)
            if not np.allclose(grid[index], wavelength, rtol=1e-9, atol=0):
                raise InputDataError(
                    f"band {band}: {name} is on another wavelength grid than "
                    f"{entries[0][0]}: extract every dither with the same settings "
                    "(oversampling, centroid grid)"
                )
            flux[row, index], error[row, index], rf_flux[row, index] = values, errors, rf_values
        result[band] = BandSpectra(
            band=band,
            names=[entry[0] for entry in entries],
            wavelength=grid,
            flux=flux,
            error=error,
            rf_flux=rf_flux,
            ra=np.array([entry[4][0] for entry in entries]),
            dec=np.array([entry[4][1] for entry in entries]),
        )
    return result


def _shared_grid(grids) -> np.ndarray:
    """Every bin of the dithers' grids once (the dithers of a band share bin centres; a
    dither may lack the end bins its flagged pixels emptied)."""
    values = np.sort(np.concatenate(grids))
    distinct = np.ones(values.size, dtype=bool)
    distinct[1:] = np.diff(values) > 1e-9 * values[1:]
    return values[distinct]


def _pointing_offsets(spectra: BandSpectra) -> np.ndarray:
    """Each dither's extraction position from the dithers' median (arcsec)."""
    if not np.any(np.isfinite(spectra.ra) & np.isfinite(spectra.dec)):
        return np.full(spectra.ra.size, np.nan)  # positions unknown: nothing to compare
    ra0, dec0 = np.nanmedian(spectra.ra), np.nanmedian(spectra.dec)
    return 3600 * np.hypot((spectra.ra - ra0) * np.cos(np.radians(dec0)), spectra.dec - dec0)


def _spectrum(name, wavelength, flux, error, rf_flux, n_input):
    """One combined spectrum in the MRS x1d layout (point source: no surface brightness)."""
    good = np.isfinite(flux) & np.isfinite(error)
    values = {
        "WAVELENGTH": wavelength,
        "FLUX": flux,
        "FLUX_ERROR": error,
        "RF_FLUX": np.full(wavelength.size, np.nan) if rf_flux is None else rf_flux,
        "DQ": np.where(good, 0, flags.DO_NOT_USE).astype(np.uint32),
        "NPIXELS": n_input,
    }
    spec = spec_model_from_values(values, column_units(1.0), datamodels.MRSSpecModel)
    spec.name = name
    spec.source_type = "POINT"
    spec.dispersion_direction = 2
    restore_validation(spec)
    return spec


def _dither_rf_flux(band: str, entry: BandSpectra) -> tuple[np.ndarray, dict]:
    """Each dither's spectrum without residual fringes: its RF_FLUX, else fitted here."""
    rf_flux = entry.rf_flux.copy()
    fitted_here, failed = [], []
    for row, name in enumerate(entry.names):
        has_flux = np.isfinite(entry.flux[row])
        if np.any(np.isfinite(rf_flux[row][has_flux])):
            continue  # mrs_extract fitted it
        fit = remove_residual_fringes(entry.wavelength, entry.flux[row], int(band[0]))
        rf_flux[row] = fit.flux
        fitted_here.append(name)
        if not fit.fitted:
            failed.append(f"{name}: {fit.message}")
            log.warning(f"Band {band}: residual fringes of {name} not removed: {fit.message}")
    return rf_flux, {"fitted_here": fitted_here, "not_fitted": failed}


def _correct_leak(combined: dict, curve: LeakCurve | None) -> dict:
    """Subtract the 1B leak from 3A (flux, RF_FLUX, error; in place) and say what was done."""
    if curve is None:
        return {"applied": False, "reason": "no mrsptcorr reference (N/A)"}
    if "1B" not in combined or "3A" not in combined:
        missing = " and ".join(band for band in ("1B", "3A") if band not in combined)
        log.info(f"No spectral leak correction: no {missing} in the input")
        return {"applied": False, "reason": f"no {missing} in the input"}
    source, target = combined["1B"], combined["3A"]
    leak, leak_error = spectral_leak(
        target.wavelength, source.wavelength, source.flux, source.error, curve
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = float(np.nanmax(leak / target.flux))
    target.flux = target.flux - leak
    target.leak = leak
    target.error = np.hypot(target.error, leak_error)
    if source.rf_flux is not None and target.rf_flux is not None:
        rf_leak, _ = spectral_leak(
            target.wavelength, source.wavelength, source.rf_flux, source.error, curve
        )
        target.rf_flux = target.rf_flux - rf_leak
    log.info(f"Spectral leak: 1B light removed from 3A (up to {100 * peak:.2f}% of its flux)")
    return {"applied": True, "peak_share": peak}


def combine_products(products, settings: CombineSettings):
    """
    Combine the dithers of every band and stitch the bands.

    Parameters
    ----------
    products : list of MultiSpecModel
        MRS x1d products of one target (any dithers and bands).
    settings : CombineSettings
        Choices.

    Returns
    -------
    output : MRSMultiSpecModel
        ``ALL`` (the stitched spectrum), then each band's combination.
    combined : dict
        Band to :class:`~mirispec_steps.mrs.core.combine.CombinedBand`.
    spectra : dict
        Band to :class:`BandSpectra` (the inputs, for plots).
    """
    spectra = band_spectra(products)
    combined: dict[str, CombinedBand] = {}
    record = {"bands": {}, "residual_fringe": {}}
    for band, entry in sorted(spectra.items()):
        rf_flux = None
        if settings.residual_fringe:
            rf_flux, record["residual_fringe"][band] = _dither_rf_flux(band, entry)
        result = combine_dithers(
            entry.flux, entry.error, entry.wavelength, settings.clip_sigma,
            settings.scale_tolerance, settings.scale_sigma, settings.dither_tolerance, rf_flux,
        )  # fmt: skip
        if result.rf_flux is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                change = (result.rf_flux / result.flux - 1.0)[np.isfinite(result.flux)]
            amplitude = float(np.sqrt(2.0 * np.nanmean(change**2))) if change.size else 0.0
            record["residual_fringe"][band]["amplitude"] = amplitude
            log.info(f"Band {band}: residual fringes of amplitude {100 * amplitude:.2f}% removed")
        combined[band] = result
        offsets = _pointing_offsets(entry)
        dithers = []
        for name, check, offset, clipped in zip(
            entry.names, result.checks, offsets, result.clipped.sum(axis=1), strict=True
        ):
            if check.excluded:
                log.warning(f"Band {band}: {name} left out: {check.reason}")
            if offset > settings.pointing_tolerance:
                log.warning(
                    f"Band {band}: {name} was extracted {offset:.2f} arcsec from the other "
                    "dithers' median position (a pointing error? the centroid followed the "
                    "source, so its flux is not affected)"
                )
            dithers.append({
                "product": name, "ratio": check.ratio, "ratio_error": check.ratio_error,
                "reduced_chi_square": check.reduced_chi_square,
                "valid_share": check.valid_share, "excluded": check.excluded,
                "reason": check.reason, "position_offset_arcsec": float(offset),
                "pointing_flag": bool(offset > settings.pointing_tolerance),
                "clipped_bins": int(clipped),
            })  # fmt: skip
        used = int(sum(not check.excluded for check in result.checks))
        log.info(
            f"Band {band}: {used} of {len(entry.names)} dithers combined over "
            f"{entry.wavelength.size} bins, {int(result.clipped.sum())} values clipped"
        )
        record["bands"][band] = {"dithers": dithers}
    record["spectral_leak"] = _correct_leak(combined, settings.leak)
    stitched = stitch_bands(combined, settings.overlap, settings.match_scale)
    for pair, ratio in stitched.scale_ratios.items():
        if not np.isfinite(ratio):
            log.info(f"Bands {pair} do not overlap: no flux ratio")
            continue
        second = pair.split("/")[1]
        applied = (
            f"band {second} scaled by {stitched.scales[second]:.4f}"
            if settings.match_scale
            else "measured, not applied"
        )
        log.info(f"Overlap {pair}: flux ratio {ratio:.4f} ({applied})")
    record.update(
        overlap=settings.overlap,
        match_scale=settings.match_scale,
        scale_ratios={pair: float(value) for pair, value in stitched.scale_ratios.items()},
        scales={band: float(value) for band, value in stitched.scales.items()},
    )
    output = datamodels.MRSMultiSpecModel()
    output.update(products[0], only="PRIMARY")
    output.spec.append(_spectrum("ALL", stitched.wavelength, stitched.flux, stitched.error,
                                 stitched.rf_flux, stitched.n_input))  # fmt: skip
    for band, result in combined.items():
        output.spec.append(_spectrum(band, result.wavelength, result.flux, result.error,
                                     result.rf_flux, result.n_input))  # fmt: skip
    output.mirispec_combination = record
    return output, combined, spectra
