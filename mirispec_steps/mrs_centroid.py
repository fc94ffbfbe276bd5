"""MRS centroids per spectral bin: the model layer of MrsCentroidStep.

Reads a calibrated MRS exposure into the arrays of
:mod:`mirispec_steps.core.centroid`, runs the staged fits per channel, and
stores the solution on the model (``model.mirispec_centroid``, an ASDF tree
that survives save/load) and as an astropy table
(:func:`read_centroid`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from mirispec_steps.adapters.mrs import ChannelGeometry, mrs_geometry
from mirispec_steps.core.calibrate import spectral_spikes
from mirispec_steps.core.centroid import (
    STATUS_OK,
    CentroidPixels,
    CentroidSettings,
    ChannelCentroid,
    fit_centroids,
)
from mirispec_steps.core.resolution import ResolvingPower
from mirispec_steps.core.spectral_grid import spectral_grid
from mirispec_steps.errors import InputDataError

__all__ = [
    "SOLUTION_KEY",
    "STATUS_FIXED",
    "TABLE_COLUMNS",
    "centroid_channels",
    "centroid_table",
    "common_wavelength_range",
    "channel_pixels",
    "read_centroid",
    "solution_tree",
    "stored_solution",
    "usable_pixels",
]

log = logging.getLogger(__name__)

#: Where the solution lives in the model's ASDF tree.
SOLUTION_KEY = "mirispec_centroid"
STATUS_FIXED = "fixed"
DO_NOT_USE = 1

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


def usable_pixels(model, reject_spikes: bool = True) -> np.ndarray:
    """
    The image's usable pixels: finite, variance > 0, not DO_NOT_USE, and no spike.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated exposure.
    reject_spikes : bool
        Also drop single-pixel spikes found against the adjacent rows
        (:func:`~mirispec_steps.core.calibrate.spectral_spikes`): unflagged
        cosmic rays.

    Returns
    -------
    ndarray
        Boolean image.
    """
    data = np.asarray(model.data, dtype=float)
    variance = np.asarray(model.err, dtype=float) ** 2
    valid = np.isfinite(data) & np.isfinite(variance) & (variance > 0)
    valid &= (np.asarray(model.dq) & DO_NOT_USE) == 0
    if reject_spikes:
        spikes = spectral_spikes(data, variance, valid)
        if np.any(spikes):
            log.info(f"{int(np.count_nonzero(spikes))} single-pixel spikes left out")
        valid &= ~spikes
    return valid


def channel_pixels(
    model, geometry: ChannelGeometry, usable: np.ndarray | None = None
) -> CentroidPixels:
    """
    A channel's surface brightness, variance and usable-pixel mask.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated exposure.
    geometry : ChannelGeometry
        The channel's pixels.
    usable : ndarray or None
        Usable-pixel image (:func:`usable_pixels`); computed if None.

    Returns
    -------
    CentroidPixels
        Arrays over the channel's pixels; unusable pixels (NaN, DO_NOT_USE,
        variance not > 0) have ``valid`` False, data 0 and variance 1.
    """
    pixels = geometry.y, geometry.x
    data = np.asarray(model.data[pixels], dtype=float)
    variance = np.asarray(model.err[pixels], dtype=float) ** 2
    if usable is None:
        usable = usable_pixels(model)
    valid = usable[pixels]
    return CentroidPixels(
        alpha_low=geometry.alpha_low,
        alpha_high=geometry.alpha_high,
        beta=geometry.beta,
        slice_number=geometry.slice_number,
        wavelength=geometry.wavelength,
        data=np.where(valid, data, 0.0),
        variance=np.where(valid, variance, 1.0),
        valid=valid,
        slice_beta=geometry.slice_beta,
        slice_width=geometry.slice_width,
    )


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


def centroid_channels(
    model,
    resolution: ResolvingPower,
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
    settings : CentroidSettings
        Fit choices.
    oversampling : float
        Spectral bins per resolution element.
    fixed_position : (float, float) or None
        ``(alpha, beta)`` in arcsec: no fitting, every bin at this position.
    maps : str or None
        ``mrsmaps`` file for data without a WCS.
    reject_spikes : bool
        Leave out single-pixel spikes (see :func:`usable_pixels`).

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
    usable = usable_pixels(model, reject_spikes)
    for geometry in mrs_geometry(model, maps=maps):
        band = geometry.name
        if band not in resolution.bands:
            raise InputDataError(f"the resolving-power file {resolution.source} lacks band {band}")
        pixels = channel_pixels(model, geometry, usable)
        if not np.any(pixels.valid):
            raise InputDataError(f"channel {band} has no usable pixel (all NaN or DO_NOT_USE)")
        low, high = common_wavelength_range(geometry, pixels.valid)
        grid = spectral_grid(low, high, resolution[band], oversampling)
        if fixed_position is not None:
            solution = _fixed_solution(grid, fixed_position)
            log.info(f"Channel {band}: position fixed at alpha, beta = {tuple(fixed_position)}")
        else:
            solution = fit_centroids(pixels, grid, settings)
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
        f"{solution.alpha_final:.4f} +- {solution.alpha_final_err:.4f}, beta = "
        f"{solution.beta_final:.4f} +- {solution.beta_final_err:.4f} arcsec"
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


def stored_solution(model) -> dict | None:
    """The centroid tree attached to a model, as plain arrays (None if absent)."""
    tree = model.instance.get(SOLUTION_KEY)
    if tree is None:
        return None
    return {
        "version": tree.get("version", 1),
        "channels": {
            key: {
                name: (np.asarray(value) if not isinstance(value, (str, float, int)) else value)
                for name, value in entry.items()
            }
            for key, entry in tree["channels"].items()
        },
    }


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

    Examples
    --------
    >>> table = read_centroid("jw_mrscen.fits")  # doctest: +SKIP
    >>> table[table["status"] == "ok"]["alpha"].mean()  # doctest: +SKIP
    """
    if isinstance(model_or_path, (str, Path)) and str(model_or_path).lower().endswith(".ecsv"):
        return Table.read(model_or_path, format="ascii.ecsv")
    if isinstance(model_or_path, (str, Path)):
        from stdatamodels.jwst import datamodels

        with datamodels.open(model_or_path) as model:
            return read_centroid(model)
    tree = stored_solution(model_or_path)
    if tree is None:
        raise InputDataError(
            "the exposure carries no centroid solution: run mrs_centroid (MrsCentroidStep) first"
        )
    return centroid_table(tree)
