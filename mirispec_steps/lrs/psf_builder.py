"""
An LRS ``psf`` reference built from exposures of a bright point source.

Each exposure is prepared as for optimal extraction (trace located with the
current reference) and its profile measured from the data
(:mod:`mirispec_steps.lrs.profile`): the reference plus a smooth correction in
the offset from the trace and along dispersion. That profile is sampled on a
sub-pixel grid at every wavelength of the new table; several exposures (both
nods, several slit positions, the integrations of a time series through
their mean) are averaged with weights equal to their squared flux S/N at
that wavelength, so each contributes the sub-pixel phases its trace tilt
samples. Where no exposure has data the current reference is kept. Each row
is normalised so that the light summed over whole pixels is 1, the
convention of :func:`~mirispec_steps.lrs.references.load_lrs_psf` (jwst
normalises over its cutout, so the file serves it as well).

The model layer of :class:`~mirispec_steps.lrs.psf_step.LrsPsfStep`; it
refuses what would make a wrong PSF: a source too faint, saturated in its
core, extended, or on the slit's edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.core.empirical_profile import ProfileBasis
from mirispec_steps.lrs.core.psf_profile import PsfTable, evaluate_profile
from mirispec_steps.lrs.exposure import LrsExposure
from mirispec_steps.lrs.optimal import OptimalParameters, PreparedScene, prepare_scene
from mirispec_steps.lrs.references import lrs_psf_model

__all__ = [
    "MeasuredPsf",
    "PsfBuildSettings",
    "build_psf",
    "measure_psf",
    "profile_fwhm",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PsfBuildSettings:
    """
    What the new table looks like and what a source must be to make it.

    Attributes
    ----------
    subpix : int
        Samples per pixel across dispersion.
    half_extent : float
        Pixels either side of the source covered by the table.
    wavelength_step : float
        Spacing of the table's wavelengths (micron).
    min_snr : float
        Smallest median flux S/N per row of an exposure.
    max_width_ratio : float
        Largest FWHM of the measured profile over the reference's (at the
        middle of the data's wavelengths): beyond it the source is extended.
    edge_margin : float
        Smallest distance (pixels) between the trace and the edge of the
        data region (the slit's end for the fixed slit).
    """

    subpix: int = 10
    half_extent: float = 30.0
    wavelength_step: float = 0.05
    min_snr: float = 50.0
    max_width_ratio: float = 1.5
    edge_margin: float = 5.0

    def offsets(self) -> np.ndarray:
        """Offsets from the source (pixels) of the table's columns."""
        n_columns = int(round(2 * self.half_extent * self.subpix)) + 1
        return (np.arange(n_columns) - (n_columns - 1) / 2.0) / self.subpix


@dataclass
class MeasuredPsf:
    """
    One exposure's measured profile, sampled for the new table.

    Attributes
    ----------
    name : str
        The exposure (for the log and the file's description).
    wavelength : ndarray
        ``(W,)`` table wavelengths the exposure covers.
    table : ndarray
        ``(W, C)`` profile at the table's offsets.
    weight : ndarray
        ``(W, C)`` squared flux S/N at those wavelengths where the table's
        offset fell on the exposure's data, 0 where it did not (beyond the
        slit's end, the profile was not measured).
    fwhm_ratio : float
        FWHM of the measured profile over the reference's, mid-range.
    """

    name: str
    wavelength: np.ndarray
    table: np.ndarray
    weight: np.ndarray
    fwhm_ratio: float


def profile_fwhm(offsets: np.ndarray, profile: np.ndarray) -> float:
    """Full width at half maximum of a sampled profile (linear between samples)."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2.0
    left = np.flatnonzero(profile[:peak] < half)
    right = np.flatnonzero(profile[peak:] < half)
    if not left.size or not right.size:
        return float("nan")
    i, j = left[-1], peak + right[0]
    low = np.interp(half, profile[i : i + 2], offsets[i : i + 2])
    high = np.interp(half, profile[j - 1 : j + 1][::-1], offsets[j - 1 : j + 1][::-1])
    return float(high - low)


def _check_source(exposure: LrsExposure, scene: PreparedScene, settings: PsfBuildSettings):
    """Refuse a faint, saturated or edge-placed source (the width is checked later)."""
    choice = scene.choice
    name = exposure.model.meta.filename
    if not choice.median_snr >= settings.min_snr:
        raise InputDataError(
            f"{name}: the source is too faint to build a PSF from (median row S/N "
            f"{choice.median_snr:.0f}; lrs_psf needs >= {settings.min_snr:g}, a bright star)"
        )
    if choice.kind != "empirical":
        raise InputDataError(f"{name}: the profile cannot be measured: {choice.reason}")
    trace = scene.geometry.trace + scene.shift
    columns = scene.geometry.wide_region.xdisp_index.astype(float)
    inside = np.isfinite(trace)
    margin = np.minimum(trace[inside] - columns[0], columns[-1] - trace[inside])
    if np.nanmin(margin) < settings.edge_margin:
        raise InputDataError(
            f"{name}: the source is {np.nanmin(margin):.1f} px from the "
            f"edge of the data (columns {columns[0]:.0f}-{columns[-1]:.0f}): off the slit or at "
            f"its end, its wings are cut; lrs_psf needs >= {settings.edge_margin:g} px"
        )
    core = np.abs(scene.builder.columns[None, :] - trace[:, None]) <= 1.5
    rows = np.any(scene.pixels.saturated & core[None], axis=(0, 2))
    if np.count_nonzero(rows) > 0.01 * rows.size:
        raise InputDataError(
            f"{name}: the source's core is saturated on "
            f"{np.count_nonzero(rows)} rows: its profile is flattened; take an exposure "
            "with shorter groups (or a fainter star)"
        )


def _sample(scene: PreparedScene, psf: PsfTable, settings: PsfBuildSettings,
            wavelength: np.ndarray) -> np.ndarray:  # fmt: skip
    """The measured profile (positive trace) at the table's offsets, one row per wavelength."""
    builder, correction = scene.builder, scene.choice.correction
    rows = np.flatnonzero(np.isfinite(builder.row_wavelength))
    order = np.argsort(builder.row_wavelength[rows])
    rho = np.interp(wavelength, builder.row_wavelength[rows][order],
                    scene.choice.row_coordinate[rows][order])  # fmt: skip
    offsets = settings.offsets()
    grid = np.broadcast_to(offsets, (wavelength.size, offsets.size))
    scale = builder.width_scale
    reference = evaluate_profile(psf, grid / scale, wavelength) / scale
    # The free terms as fitted: the reference and its derivative in the trace's shift.
    derivative = -evaluate_profile(psf, grid / scale, wavelength, slope=True) / scale**2
    basis = ProfileBasis.at(correction.layout, [grid], [[reference, derivative]], rho)
    table = reference + correction.evaluate(basis)
    # Whole-pixel sums at every sub-pixel phase are 1 on average (the loader's convention).
    return table / (table.sum(axis=1, keepdims=True) / settings.subpix)


def measure_psf(
    exposure: LrsExposure, params: OptimalParameters, psf: PsfTable, settings: PsfBuildSettings
) -> MeasuredPsf:
    """
    One exposure's profile, measured from the data and sampled for the new table.

    Parameters
    ----------
    exposure : LrsExposure
        A bright point source (cal or calints).
    params : OptimalParameters
        Extraction parameters (``profile="empirical"``).
    psf : PsfTable
        The current reference (the trace is located with it, and it is the
        starting point of the measured profile).
    settings : PsfBuildSettings
        The new table's layout and the source checks.

    Returns
    -------
    MeasuredPsf
        The sampled profile and its weights.

    Raises
    ------
    InputDataError
        The source is too faint, saturated, on the data's edge or extended.
    """
    name = str(exposure.model.meta.filename or "exposure")
    try:
        scene = prepare_scene(exposure, params, psf)
    except InputDataError as exc:
        raise InputDataError(f"{name}: {exc}") from None
    _check_source(exposure, scene, settings)
    builder = scene.builder
    valid_rows = np.isfinite(builder.row_wavelength) & scene.geometry.keep
    low = float(np.nanmin(builder.row_wavelength[valid_rows]))
    high = float(np.nanmax(builder.row_wavelength[valid_rows]))
    start = np.ceil(low / settings.wavelength_step) * settings.wavelength_step
    wavelength = np.arange(start, high, settings.wavelength_step)
    table = _sample(scene, psf, settings, wavelength)
    offsets = settings.offsets()
    middle = wavelength.size // 2
    reference = evaluate_profile(psf, offsets[None, :], wavelength[[middle]])[0]
    ratio = profile_fwhm(offsets, table[middle]) / profile_fwhm(offsets, reference)
    if not np.isfinite(ratio) or ratio > settings.max_width_ratio:
        raise InputDataError(
            f"{name}: the source looks extended (profile FWHM {ratio:.2f} times the PSF's at "
            f"{wavelength[middle]:.1f} um; lrs_psf needs a point source, <= "
            f"{settings.max_width_ratio:g})"
        )
    snr = np.interp(wavelength, *_row_snr_curve(scene))
    trace = scene.geometry.trace + scene.shift
    rows = np.isfinite(builder.row_wavelength) & np.isfinite(trace)
    order = np.argsort(builder.row_wavelength[rows])
    position = np.interp(wavelength, builder.row_wavelength[rows][order], trace[rows][order])
    columns = position[:, None] + offsets[None, :]
    data_columns = scene.geometry.wide_region.xdisp_index
    on_data = (columns >= data_columns[0] - 0.5) & (columns <= data_columns[-1] + 0.5)
    log.info(
        f"{name}: profile measured over {low:.2f}-{high:.2f} um, median row S/N "
        f"{scene.choice.median_snr:.0f}, FWHM {ratio:.3f} times the reference's at "
        f"{wavelength[middle]:.1f} um"
    )
    return MeasuredPsf(name, wavelength, table, snr[:, None] ** 2 * on_data, float(ratio))


def _row_snr_curve(scene: PreparedScene) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength, flux S/N) of the rows, increasing in wavelength, from the start fit."""
    builder = scene.builder
    snr = scene.choice.row_snr
    keep = np.isfinite(builder.row_wavelength) & np.isfinite(snr)
    order = np.argsort(builder.row_wavelength[keep])
    return builder.row_wavelength[keep][order], snr[keep][order]


def build_psf(measured: list[MeasuredPsf], psf: PsfTable, settings: PsfBuildSettings,
              exp_types: tuple[str, ...]):  # fmt: skip
    """
    The new ``psf`` reference: the exposures' profiles averaged, the reference elsewhere.

    Parameters
    ----------
    measured : list of MeasuredPsf
        One per exposure.
    psf : PsfTable
        The current reference (kept where no exposure has data).
    settings : PsfBuildSettings
        The table's layout.
    exp_types : tuple of str
        Exposure types of the inputs (the file's ``EXP_TYPE``).

    Returns
    -------
    SpecPsfModel
        The reference, not yet saved.
    """
    step = settings.wavelength_step
    low = min(float(psf.wave[0]), *(m.wavelength[0] for m in measured))
    high = max(float(psf.wave[-1]), *(m.wavelength[-1] for m in measured))
    wavelength = np.round(np.arange(np.ceil(low / step) * step, high + 1e-9, step), 6)
    offsets = settings.offsets()
    total = np.zeros((wavelength.size, offsets.size))
    weights = np.zeros_like(total)
    for entry in measured:
        index = np.searchsorted(wavelength, np.round(entry.wavelength, 6))
        total[index] += entry.weight * entry.table
        weights[index] += entry.weight
    # Where no exposure measured an offset (beyond the slit's end) or a wavelength,
    # the current reference stands.
    table = evaluate_profile(psf, np.broadcast_to(offsets, total.shape), wavelength)
    measured_here = weights > 0
    table[measured_here] = total[measured_here] / weights[measured_here]
    table /= table.sum(axis=1, keepdims=True) / settings.subpix
    covered = measured_here.any(axis=1)
    measured_range = (wavelength[covered][0], wavelength[covered][-1])
    if (~covered).any():
        log.info(
            f"The reference {psf.source} is kept outside {measured_range[0]:.2f}-"
            f"{measured_range[1]:.2f} um, where the exposures have no data"
        )
    description = (
        f"LRS effective PSF measured by mirispec_steps lrs_psf from "
        f"{', '.join(m.name for m in measured)} over {measured_range[0]:.2f}-"
        f"{measured_range[1]:.2f} um (starting reference {psf.source}, kept elsewhere)"
    )
    center_col = (offsets.size - 1) / 2.0
    return lrs_psf_model(wavelength, table, settings.subpix, center_col, description,
                         exp_types=exp_types)  # fmt: skip
