"""MRS centroids per spectral bin: the model layer of MrsCentroidStep.

Reads a calibrated MRS exposure (through :mod:`~mirispec_steps.mrs.exposure`)
into the arrays of :mod:`mirispec_steps.mrs.core.centroid`, runs the staged
fits per channel with the PSF widths of the ``mrspsf`` reference, and stores
the solution on the model (``model.mirispec_centroid``, an ASDF tree that
survives save/load) and as an astropy table (:func:`read_centroid`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from mirispec_steps.core.gaussian import FWHM_TO_SIGMA
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs import exposure as mrs_exposure
from mirispec_steps.mrs.core.centroid import (
    STATUS_OK,
    CentroidSettings,
    ChannelCentroid,
    fit_centroids,
)
from mirispec_steps.mrs.core.resolution import ResolvingPower
from mirispec_steps.mrs.core.spectral_grid import SpectralGrid, spectral_grid
from mirispec_steps.mrs.geometry import ChannelGeometry, mrs_geometry
from mirispec_steps.mrs.references import MrsPsfReference, band_resolving_power

__all__ = [
    "STATUS_FIXED",
    "TABLE_COLUMNS",
    "centroid_channels",
    "centroid_table",
    "band_grid",
    "common_wavelength_range",
    "read_centroid",
    "solution_tree",
]

log = logging.getLogger(__name__)

STATUS_FIXED = "fixed"

#: Per-bin columns of the centroid table, with units.
TABLE_COLUMNS = {
    "wavelength": "um",
    "bin_width": "um",
    "amplitude": "MJy/sr",
    "alpha": "arcsec",
    "beta": "arcsec",
    "sigma_alpha": "arcsec",
    "sigma_beta": "arcsec",
    "alpha_err": "arcsec",
    "beta_err": "arcsec",
    "status": None,
    "alpha_smooth": "arcsec",
    "beta_smooth": "arcsec",
    "theta": "rad",
    "background": "MJy/sr",
    "n_pixels": None,
}
FINAL_KEYS = ("alpha_final", "beta_final", "alpha_final_err", "beta_final_err")


def _fixed_solution(grid, position) -> ChannelCentroid:
    size = len(grid)
    nan = np.full(size, np.nan)
    alpha, beta = (float(v) for v in position)
    return ChannelCentroid(
        wavelength=grid.wavelength,
        bin_width=grid.width,
        amplitude=nan,
        alpha=np.full(size, alpha),
        beta=np.full(size, beta),
        sigma_alpha=nan,
        sigma_beta=nan,
        alpha_err=np.zeros(size),
        beta_err=np.zeros(size),
        theta=nan,
        background=nan,
        n_pixels=np.zeros(size, dtype=int),
        status=np.full(size, STATUS_FIXED, dtype="<U10"),
        alpha_smooth=np.full(size, alpha),
        beta_smooth=np.full(size, beta),
        alpha_final=alpha,
        beta_final=beta,
        alpha_final_err=0.0,
        beta_final_err=0.0,
    )


def common_wavelength_range(geometry: ChannelGeometry, valid: np.ndarray) -> tuple[float, float]:
    """Wavelengths that every slice covers (bins at the band ends hold all slices)."""
    lows, highs = [], []
    for number in np.unique(geometry.slice_number[valid]):
        wavelength = geometry.wavelength[valid & (geometry.slice_number == number)]
        lows.append(wavelength.min())
        highs.append(wavelength.max())
    return float(np.max(lows)), float(np.min(highs))


def band_grid(
    geometry: ChannelGeometry, valid: np.ndarray, resolution: ResolvingPower, oversampling: float
) -> SpectralGrid:
    """
    A channel's spectral bins: anchored on the instrument's coverage, kept where the data are.

    Parameters
    ----------
    geometry : ChannelGeometry
        The channel's pixels.
    valid : ndarray
        ``(N,)`` usable pixels.
    resolution : ResolvingPower
        Resolving power per band.
    oversampling : float
        Bins per resolution element.

    Returns
    -------
    SpectralGrid
        The bins lying wholly inside the range every slice covers with
        usable pixels.

    Notes
    -----
    The bins start from the range every slice covers on the detector,
    flagged pixels included, so that every exposure of a band (every dither,
    whatever its flags) has its bins at the same wavelengths: a flagged
    pixel at a slice end only drops the bins it empties. ``mrs_combine``
    combines dithers bin by bin.
    """
    covered = common_wavelength_range(geometry, np.ones(geometry.wavelength.size, dtype=bool))
    low, high = common_wavelength_range(geometry, valid)
    power = band_resolving_power(resolution, geometry.name, *covered)
    grid = spectral_grid(*covered, power, oversampling)
    half = 0.5 * grid.width
    keep = (grid.wavelength - half >= low) & (grid.wavelength + half <= high)
    return SpectralGrid(grid.wavelength[keep], grid.width[keep])


def centroid_channels(
    model,
    resolution: ResolvingPower,
    psf_reference: MrsPsfReference,
    settings: CentroidSettings,
    oversampling: float = 1.0,
    fixed_position=None,
    maps=None,
    reject_spikes: bool = True,
) -> dict[int, tuple[ChannelGeometry, ChannelCentroid]]:
    """
    Centroid solution of every channel on the exposure's detector.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated MRS exposure (MJy/sr) with a WCS, or ``maps``.
    resolution : ResolvingPower
        Resolving power per band (the spectral grid).
    psf_reference : MrsPsfReference
        The PSF per band: the expected core width in every bin.
    settings : CentroidSettings
        Fit choices.
    oversampling : float
        Spectral bins per resolution element.
    fixed_position : (float, float) or None
        ``(alpha, beta)`` in arcsec: no fitting, every bin at this position.
    maps : str or None
        ``mrsmaps`` file for data without a WCS.
    reject_spikes : bool
        Leave out single-pixel spikes (see :func:`~mirispec_steps.mrs.exposure.usable_pixels`).

    Returns
    -------
    dict
        ``{channel: (geometry, solution)}``.

    Raises
    ------
    InputDataError
        A channel with no usable pixel, or (fitting) no bin with a source.
    """
    results = {}
    usable = mrs_exposure.usable_pixels(model, reject_spikes)
    for geometry in mrs_geometry(model, maps=maps):
        band = geometry.name
        pixels = mrs_exposure.channel_pixels(model, geometry, usable)
        if not np.any(pixels.valid):
            raise InputDataError(f"channel {band} has no usable pixel (all NaN or DO_NOT_USE)")
        grid = band_grid(geometry, pixels.valid, resolution, oversampling)
        if fixed_position is not None:
            solution = _fixed_solution(grid, fixed_position)
            log.info(
                f"Channel {band}: position fixed at alpha = {fixed_position[0]:.4f}, "
                f"beta = {fixed_position[1]:.4f} arcsec"
            )
        else:
            first, last = grid.wavelength_span
            psf = psf_reference.for_band(band, first, last)
            expected_sigma = np.asarray(psf.fwhm(grid.wavelength), dtype=float) * FWHM_TO_SIGMA
            solution = fit_centroids(pixels, grid, expected_sigma, settings)
            _report(band, solution)
        results[geometry.channel] = (geometry, solution)
    return results


def _report(band: str, solution: ChannelCentroid) -> None:
    counts = {
        str(name): int(np.count_nonzero(solution.status == name))
        for name in np.unique(solution.status)
    }
    good = int(np.count_nonzero(solution.status == STATUS_OK))
    if good == 0:
        raise InputDataError(
            f"channel {band}: no spectral bin holds a detectable point source ({counts}); "
            "is the exposure background-subtracted and the source in the field? "
            "Pass fixed_position=[alpha, beta] to extract at a known position."
        )
    log.info(
        f"Channel {band}: {len(solution.wavelength)} bins {counts}; source at alpha = "
        f"{solution.alpha_final * 1e3:.1f} +- {solution.alpha_final_err * 1e3:.1f} mas, beta = "
        f"{solution.beta_final * 1e3:.1f} +- {solution.beta_final_err * 1e3:.1f} mas"
    )


def solution_tree(results: dict) -> dict:
    """The ASDF tree stored as ``model.mirispec_centroid``."""
    channels = {}
    for channel, (geometry, solution) in results.items():
        entry = {name: np.asarray(getattr(solution, name)) for name in TABLE_COLUMNS}
        entry["status"] = entry["status"].astype("U10")
        entry.update({key: float(getattr(solution, key)) for key in FINAL_KEYS})
        entry["band"] = geometry.name
        channels[str(channel)] = entry
    return {"version": 1, "channels": channels}


def centroid_table(tree: dict) -> Table:
    """
    Flatten a stored solution into one table (rows ordered by channel, then wavelength).

    Parameters
    ----------
    tree : dict
        ``model.mirispec_centroid``.

    Returns
    -------
    astropy.table.Table
        Columns ``channel``, ``band`` and :data:`TABLE_COLUMNS`; the final
        positions per channel in ``table.meta["final"]``.
    """
    rows = []
    final = {}
    for key in sorted(tree["channels"], key=int):
        entry = tree["channels"][key]
        columns = {name: np.asarray(entry[name]) for name in TABLE_COLUMNS}
        size = columns["wavelength"].size
        columns = {
            "channel": np.full(size, int(key)),
            "band": np.full(size, str(entry["band"])),
            **columns,
        }
        rows.append(Table(columns))
        final[str(entry["band"])] = {k: float(entry[k]) for k in FINAL_KEYS}
    table = vstack(rows) if len(rows) > 1 else rows[0]
    for name, unit in TABLE_COLUMNS.items():
        if unit is not None:
            table[name].unit = unit
    table["status"] = table["status"].astype(str)
    table.meta["final"] = final
    return table


def read_centroid(model_or_path) -> Table:
    """
    The per-bin centroid table of a model, an ``mrscen`` file or a saved table.

    Parameters
    ----------
    model_or_path : IFUImageModel, str or Path
        Output of ``MrsCentroidStep`` (in memory or saved), or the ECSV
        table written with ``save_centroid_table``.

    Returns
    -------
    astropy.table.Table
        Columns ``channel``, ``band``, ``wavelength``, ``bin_width``,
        ``amplitude``, ``alpha``, ``beta``, ``sigma_alpha``, ``sigma_beta``,
        ``alpha_err``, ``beta_err``, ``status``, ``alpha_smooth``,
        ``beta_smooth``, ``theta``, ``background``, ``n_pixels``.

    Raises
    ------
    InputDataError
        The model carries no centroid solution.

    Notes
    -----
    Typical use, on the product of ``strun mrs_centroid``::

        table = read_centroid("jw..._mrscen.fits")
        good = table[table["status"] == "ok"]
        print(good["wavelength", "alpha", "beta"])
    """
    if isinstance(model_or_path, (str, Path)) and str(model_or_path).lower().endswith(".ecsv"):
        return Table.read(model_or_path, format="ascii.ecsv")
    if isinstance(model_or_path, (str, Path)):
        from stdatamodels.jwst import datamodels

        with datamodels.open(model_or_path) as model:
            return read_centroid(model)
    tree = mrs_exposure.stored_solution(model_or_path)
    if tree is None:
        raise InputDataError(
            "the exposure carries no centroid solution: run mrs_centroid (MrsCentroidStep) first"
        )
    return centroid_table(tree)
