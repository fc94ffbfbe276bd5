"""MRS x1d spectra of a dither set combined per band and stitched (model layer of mrs_combine).

Input: the x1d products of :class:`~mirispec_steps.MrsExtractStep` (one
spectrum per channel, named by band), any number of dithers and grating
settings of one target. Per band, the dithers' spectra share the band's grid
and are combined by :func:`~mirispec_steps.mrs.core.combine.combine_dithers`;
the bands are then joined by :func:`~mirispec_steps.mrs.core.combine.stitch_bands`.
The product is a ``MultiCombinedSpecModel`` (jwst's c1d layout, read by
specutils): the stitched spectrum first (named ``ALL``), then each band's
combination, and a ``mirispec_combination`` record of every dither's checks.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from stdatamodels.jwst import datamodels

from mirispec_steps import flags
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.core.combine import CombinedBand, combine_dithers, stitch_bands
from mirispec_steps.mrs.geometry import BAND_NAMES

__all__ = ["BandSpectra", "CombineSettings", "band_spectra", "combine_products"]

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
    overlap : str
        ``cut`` or ``average`` (band overlaps).
    match_scale : bool
        Scale bands to their predecessor in the overlaps.
    pointing_tolerance : float
        Extraction positions further than this (arcsec) from the dithers'
        median are reported.
    """

    clip_sigma: float = 4.0
    scale_tolerance: float = 0.01
    scale_sigma: float = 5.0
    overlap: str = "cut"
    match_scale: bool = False
    pointing_tolerance: float = 0.1


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
    ra, dec : ndarray
        ``(N,)`` where each was extracted (degrees; NaN when unknown).
    """

    band: str
    names: list
    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


def _target(product) -> tuple:
    target = product.meta.target
    return target.catalog_name or target.proposer_name, target.ra, target.dec


def _check_products(products) -> None:
    """Every product an MRS x1d of one target, else an error naming the odd one."""
    first = None
    for product in products:
        name = product.meta.filename or "an input"
        exposure_type = product.meta.exposure.type
        if exposure_type != "MIR_MRS" or not hasattr(product, "spec"):
            raise InputDataError(
                f"{name} is not an MRS x1d product (EXP_TYPE {exposure_type}, "
                f"{type(product).__name__}): mrs_combine combines the x1d files of mrs_extract"
            )
        target = _target(product)
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
        or dithers of one band on different grids.
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
            position = (
                np.nan if spec.slit_ra is None else float(spec.slit_ra),
                np.nan if spec.slit_dec is None else float(spec.slit_dec),
            )
            grouped.setdefault(band, []).append(
                (product.meta.filename, np.asarray(table["WAVELENGTH"], float), flux, error,
                 position)
            )  # fmt: skip
    result = {}
    for band, entries in grouped.items():
        grid = entries[0][1]
        for name, wavelength, *_ in entries[1:]:
            if wavelength.shape != grid.shape or not np.allclose(wavelength, grid, rtol=1e-9):
                raise InputDataError(
                    f"band {band}: {name} is on another wavelength grid than "
                    f"{entries[0][0]}: extract every dither with the same settings "
                    "(oversampling, centroid grid)"
                )
        result[band] = BandSpectra(
            band=band,
            names=[entry[0] for entry in entries],
            wavelength=grid,
            flux=np.array([entry[2] for entry in entries]),
            error=np.array([entry[3] for entry in entries]),
            ra=np.array([entry[4][0] for entry in entries]),
            dec=np.array([entry[4][1] for entry in entries]),
        )
    return result


def _pointing_offsets(spectra: BandSpectra) -> np.ndarray:
    """Each dither's extraction position from the dithers' median (arcsec)."""
    ra0, dec0 = np.nanmedian(spectra.ra), np.nanmedian(spectra.dec)
    return 3600 * np.hypot((spectra.ra - ra0) * np.cos(np.radians(dec0)), spectra.dec - dec0)


@functools.cache
def _c1d_dtype() -> np.dtype:
    """jwst's c1d table layout, from its schema (as jwst's combine_1d builds it)."""
    return datamodels.CombinedSpecModel().get_dtype("spec_table")


def _table(wavelength, flux, error, n_input) -> np.ndarray:
    table = np.zeros(wavelength.size, dtype=_c1d_dtype())
    table["WAVELENGTH"], table["FLUX"], table["ERROR"] = wavelength, flux, error
    # A point source's combined spectrum has no surface brightness (as jwst's c1d of x1d).
    table["SURF_BRIGHT"] = table["SB_ERROR"] = np.nan
    with np.errstate(divide="ignore"):
        table["WEIGHT"] = np.where(np.isfinite(error), 1.0 / error**2, 0.0)
    table["N_INPUT"] = n_input
    table["DQ"] = np.where(np.isfinite(flux), 0, flags.DO_NOT_USE)
    return table


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
    output : MultiCombinedSpecModel
        ``ALL`` (the stitched spectrum), then each band's combination.
    combined : dict
        Band to :class:`~mirispec_steps.mrs.core.combine.CombinedBand`.
    spectra : dict
        Band to :class:`BandSpectra` (the inputs, for plots).
    """
    spectra = band_spectra(products)
    combined: dict[str, CombinedBand] = {}
    record = {"bands": {}}
    for band, entry in sorted(spectra.items()):
        result = combine_dithers(
            entry.flux, entry.error, entry.wavelength, settings.clip_sigma,
            settings.scale_tolerance, settings.scale_sigma,
        )  # fmt: skip
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
    stitched = stitch_bands(combined, settings.overlap, settings.match_scale)
    for pair, ratio in stitched.scale_ratios.items():
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
    output = datamodels.MultiCombinedSpecModel()
    output.update(products[0], only="PRIMARY")
    entries = [("ALL", _table(stitched.wavelength, stitched.flux, stitched.error,
                              stitched.n_input))]  # fmt: skip
    entries += [
        (band, _table(result.wavelength, result.flux, result.error, result.n_input))
        for band, result in combined.items()
    ]
    for name, table in entries:
        spec = datamodels.CombinedSpecModel(spec_table=table)
        spec.name = name
        spec.source_type = "POINT"
        spec.dispersion_direction = 2
        output.spec.append(spec)
    for name, unit in (("WAVELENGTH", "um"), ("FLUX", "Jy"), ("ERROR", "Jy"),
                       ("SURF_BRIGHT", "MJy/sr"), ("SB_ERROR", "MJy/sr")):  # fmt: skip
        for spec in output.spec:
            spec.spec_table.columns[name].unit = unit
    output.mirispec_combination = record
    return output, combined, spectra
