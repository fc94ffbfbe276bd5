"""LRS optimal extraction: from an exposure, a PSF table and parameters to an x1d model.

The model layer between :mod:`~mirispec_steps.lrs.optimal_step` and the
pure-NumPy core (:mod:`mirispec_steps.core.optimal`,
:mod:`~mirispec_steps.lrs.core.trace_fit`,
:mod:`~mirispec_steps.lrs.core.psf_profile`); it reads the exposure only
through :mod:`~mirispec_steps.lrs.exposure`. The trace comes from the WCS
(the dithered source position, or the aperture reference point), is
optionally refined by the chi-square of the scene model (one global shift,
or a polynomial along dispersion), and every row of every integration is
fitted with the PSF profile (plus the negative nod and a background
polynomial) by inverse model-variance weighting.

Stages of :func:`extract_optimal`: geometry (trace, fit window, row
wavelengths), usable pixels, the integration-mean image, trace location,
the variance model of a time series, an optional separate background, the
fit of every row, and the flux variances and products.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from mirispec_steps import flags
from mirispec_steps.core.optimal import (
    RowFit,
    SeriesFit,
    evaluate_rows,
    fit_rows,
    fit_series,
    poisson_variance_model,
    polynomial_basis,
    solve_rows,
)
from mirispec_steps.core.robust import nan_boxcar
from mirispec_steps.core.spikes import spectral_spikes
from mirispec_steps.errors import InputDataError, ParameterError
from mirispec_steps.lrs import exposure as lrs_exposure
from mirispec_steps.lrs.box import BoxParameters, build_box_apertures
from mirispec_steps.lrs.core.psf_profile import PsfTable, evaluate_profile
from mirispec_steps.lrs.core.trace_fit import (
    ShiftSolution,
    best_shift,
    chi2_curves,
    fit_shift_polynomial,
    parabola_minimum,
)
from mirispec_steps.lrs.exposure import LrsExposure, LrsPixels, LrsRegion
from mirispec_steps.lrs.profile import ProfileChoice, ProfileScene, choose_profiles
from mirispec_steps.progress import progress
from mirispec_steps.x1d import SpectrumColumns

__all__ = [
    "OptimalParameters",
    "OptimalProducts",
    "PreparedScene",
    "extract_optimal",
    "prepare_scene",
]

log = logging.getLogger(__name__)

#: Outliers are judged against the misfit the profile shows (a PSF the reference does not
#: describe, a measured profile's residual errors): per column, the median over this many
#: neighbouring rows, which a hit (one pixel of one row) cannot set
#: (:func:`~mirispec_steps.core.optimal.measured_misfit`).
MISFIT_ROWS = 9
#: Rows fitted per batch (bounds memory for long time series).
ROWS_PER_BATCH = 20000
#: Profile level (fraction of the row's peak) below which a pixel counts as background.
BACKGROUND_PROFILE_LEVEL = 2e-3
#: Fraction of the fitted pixels missed by more than ``reject_sigma`` noise sigma above which
#: the scene model is reported as inadequate.
REJECTED_FRACTION_WARNING = 0.005
#: Trace-shift search: coarse and fine grids (pixels), and the largest offset
#: from the WCS trace followed when the optimum sits on a grid's edge.
COARSE_SHIFTS = np.arange(-2.0, 2.0001, 0.25)
FINE_SHIFTS = np.arange(-0.25, 0.2501, 0.05)
MAX_TRACE_SHIFT = 10.0
#: PSF width-scale search: one grid step is 2.5%; the scale may move this far.
WIDTH_SCALE_STEPS = np.exp(np.linspace(np.log(0.8), np.log(1.25), 19))
WIDTH_SCALE_LIMITS = (0.5, 2.0)


@dataclass
class OptimalParameters:
    """
    Final optimal-extraction parameters for one exposure.

    Attributes
    ----------
    subtract_background : bool
        Fit a background polynomial per row.
    bkg_order : int
        Its order.
    bkg_smoothing_length : int
        Boxcar (rows) smoothing the background along dispersion; 0 fits it
        jointly with the PSF on each row.
    background_regions : BoxParameters or None
        The extract1d background regions (box-extraction parameters, so they
        mean and move exactly as in box extraction), if given.
    use_source_posn : bool
        Centre on the dithered source position (else the aperture reference).
    position_offset : float
        Extra cross-dispersion offset (pixels).
    optimize_psf_location : bool
        Fit a global shift of the trace.
    optimize_psf_width : bool
        Fit a global width scale of the PSF (for a PSF model that does not
        match the data).
    fit_trace_order : int
        Polynomial order of a smooth trace offset along dispersion (-1: none).
    model_nod_pair : bool
        Fit the negative trace of nod-subtracted data.
    reject_sigma : float
        Outlier rejection threshold (0: none).
    disp_start, disp_stop : float
        Dispersion limits (pixels, inclusive).
    fit_half_width : float or None
        Fit only the columns within this many pixels of the trace(s); None
        fits the whole cutout (always so with extract1d background regions).
    profile : {"auto", "psf", "empirical"}
        Source profile: the PSF reference, measured from the data, or the
        latter when the source is bright enough (:mod:`mirispec_steps.lrs.profile`).
    reject_spikes : bool
        Leave out single-pixel spikes found against the adjacent rows
        (:func:`~mirispec_steps.core.spikes.spectral_spikes`) before any fit.
    """

    subtract_background: bool
    bkg_order: int
    bkg_smoothing_length: int
    background_regions: BoxParameters | None
    use_source_posn: bool
    position_offset: float
    optimize_psf_location: bool
    optimize_psf_width: bool
    fit_trace_order: int
    model_nod_pair: bool
    reject_sigma: float
    disp_start: float
    disp_stop: float
    fit_half_width: float | None = None
    profile: str = "auto"
    reject_spikes: bool = True


@dataclass
class OptimalProducts:
    """
    Everything an optimal extraction produced.

    Attributes
    ----------
    x1d : MultiSpecModel or TSOMultiSpecModel
        The spectra.
    profile : ndarray
        Full-frame normalised source profile (negative nod included with its
        sign).
    trace : ndarray
        Final source position on each cutout row (full-frame column).
    rows : ndarray
        Detector rows of ``trace``.
    shift : ShiftSolution or None
        The fitted trace offset, if optimised.
    n_rejected : int
        Pixels rejected as outliers.
    scene_cutout : ndarray
        ``(n_int, n_rows, n_xdisp)`` fitted scene on the cutout.
    used_cutout : ndarray
        ``(n_int, n_rows, n_xdisp)`` pixels the fit could use.
    data : ndarray
        The input's science array (read only).
    slices : tuple of slice
        Where the cutout lies in the full frame.
    profile_choice : ProfileChoice
        Which profile was fitted, and why.
    profile_cutout, reference_cutout : ndarray
        ``(n_rows, n_xdisp)`` the fitted source profile and the PSF
        reference's, on the cutout (positive trace).
    row_wavelength : ndarray
        ``(n_rows,)`` wavelength of the source on each cutout row.

    Notes
    -----
    The full-frame ``scene`` and ``residual`` images (``(n_int, ny, nx)``)
    are built on first access only: a long time series does not pay for
    images nobody saves.
    """

    x1d: object
    profile: np.ndarray
    trace: np.ndarray
    rows: np.ndarray
    shift: ShiftSolution | None
    n_rejected: int
    scene_cutout: np.ndarray
    used_cutout: np.ndarray
    data: np.ndarray
    slices: tuple
    profile_choice: ProfileChoice
    profile_cutout: np.ndarray
    reference_cutout: np.ndarray
    row_wavelength: np.ndarray

    @functools.cached_property
    def scene(self) -> np.ndarray:
        """Full-frame fitted scene (source, negative nod and background); NaN where not fitted."""
        scene = np.full((self.scene_cutout.shape[0], *self.data.shape[-2:]), np.nan)
        scene[(slice(None), *self.slices)] = self.scene_cutout
        return scene

    @functools.cached_property
    def residual(self) -> np.ndarray:
        """Data minus scene; NaN where the data are not finite or were not fitted."""
        data_full = np.array(self.data, dtype=float, ndmin=3)
        residual = np.where(np.isfinite(data_full), data_full - self.scene, np.nan)
        cut = residual[(slice(None), *self.slices)]
        cut[~self.used_cutout] = np.nan
        residual[(slice(None), *self.slices)] = cut
        return residual


def _row_wavelength(wavelength: np.ndarray, region, trace: np.ndarray) -> np.ndarray:
    """Wavelength of the source light on each row: the cutout wavelength at the trace."""
    columns = region.xdisp_index.astype(float)
    result = np.full(trace.size, np.nan)
    for_rows = np.isfinite(trace)
    # Linear interpolation along each row at the trace position (vectorised).
    position = np.interp(trace[for_rows], columns, np.arange(columns.size))
    low = np.clip(np.floor(position).astype(int), 0, columns.size - 2)
    frac = position - low
    rows = np.flatnonzero(for_rows)
    left, right = wavelength[rows, low], wavelength[rows, low + 1]
    value = left + frac * (right - left)
    value = np.where(np.isfinite(value), value, np.where(frac < 0.5, left, right))
    result[rows] = value
    return result


def _nominal_traces(exposure: LrsExposure, region, wavelength, params):
    """Positive (and optionally negative-nod) traces from the WCS, per cutout row."""
    sky = None
    if params.use_source_posn and exposure.fixed_slit:
        sky = lrs_exposure.source_sky_position(exposure)
        if lrs_exposure.dithered_sky_position(exposure) is None:
            log.warning("dithered source position unknown; using the aperture reference point")
    if sky is None:
        sky = lrs_exposure.reference_sky_position(exposure)
    if sky is None:
        raise InputDataError(
            "cannot place the PSF: neither meta.dither.dithered_ra/dec nor the WCS reference "
            "point (wcsinfo.v2_ref/v3_ref through a v2v3 frame) give the source position"
        )
    trace = lrs_exposure.source_trace(exposure, region, wavelength, sky=sky)
    if trace is None or not np.any(np.isfinite(trace)):
        raise InputDataError("the WCS puts the source nowhere on the detector")
    trace = trace + params.position_offset
    negative = None
    if params.model_nod_pair:
        if not exposure.nod_subtracted:
            log.info("Input is not a nod-subtracted two-point nod: no negative trace modelled")
        else:
            other = lrs_exposure.mirrored_nod_sky_position(exposure)
            if other is not None:
                negative = lrs_exposure.source_trace(exposure, region, wavelength, sky=other)
                negative = negative + params.position_offset
            separation = np.nanmedian(np.abs(trace - negative)) if negative is not None else 0
            if negative is None or not np.isfinite(separation) or separation < 2:
                log.warning("The negative nod could not be placed from the WCS; not modelled")
                negative = None
            else:
                log.info(f"Negative nod trace modelled {np.nanmedian(negative - trace):+.2f} px")
    return trace, negative


def _row_statistics(
    weights, used, variance, components, profile, bkg_coefficients, bkg_basis, joint_background
):
    """
    Per-row flux variance terms, effective pixels, background share and level.

    All arrays broadcast over their leading axes: shared time-series rows
    (``(R, X)`` weights) go against per-integration ``(B, R, X)`` variances
    without building ``(B, R, X)`` temporaries (einsum).

    Returns ``[var_rnoise, var_poisson, var_flat, bkg_var_rnoise,
    bkg_var_poisson, bkg_var_flat, npixels, background_level]``.
    """
    squared_weights = weights**2
    var_terms = [np.einsum("...x,...x->...", squared_weights, c) for c in components]
    in_fit = used.astype(float)
    source = profile * in_fit
    with np.errstate(invalid="ignore", divide="ignore"):
        npixels = np.nan_to_num(source.sum(axis=-1) ** 2 / (source * profile).sum(axis=-1))
    bkg_var_terms = [np.zeros_like(v) for v in var_terms]
    background_level = np.zeros(np.broadcast_shapes(var_terms[0].shape, npixels.shape))
    if joint_background:
        # Variance the joint background adds: with minus without background terms.
        profile_weight = source / variance
        with np.errstate(invalid="ignore", divide="ignore"):
            alone = profile_weight / np.sum(profile_weight * profile, axis=-1, keepdims=True)
        squared_alone = np.nan_to_num(alone) ** 2
        for index, component in enumerate(components):
            without = np.einsum("...x,...x->...", squared_alone, component)
            bkg_var_terms[index] = np.clip(var_terms[index] - without, 0.0, None)
        # Background under the source: sum(P * b.basis) / sum(P) per row.
        projected = profile @ bkg_basis.T
        with np.errstate(invalid="ignore", divide="ignore"):
            background_level = np.nan_to_num(
                np.einsum("...k,...k->...", np.nan_to_num(bkg_coefficients), projected)
                / profile.sum(axis=-1)
            )
    return [*var_terms, *bkg_var_terms, npixels, background_level]


def _fit_window(region, wavelength, trace, negative, params):
    """Narrow the cutout to the columns within ``fit_half_width`` of the trace(s)."""
    positions = trace if negative is None else np.concatenate([trace, negative])
    positions = positions[np.isfinite(positions)]
    low = np.floor(positions.min() - params.fit_half_width)
    high = np.ceil(positions.max() + params.fit_half_width)
    inside = (region.xdisp_index >= low) & (region.xdisp_index <= high)
    if not inside.any():
        raise InputDataError(
            f"the trace (columns {positions.min():.1f}-{positions.max():.1f}) lies outside the "
            f"data region (columns {region.xdisp_index[0]}-{region.xdisp_index[-1]})"
        )
    narrowed = LrsRegion(
        region.disp_index, region.xdisp_index[inside], region.dispaxis, region.full_shape
    )
    return narrowed, wavelength[:, inside]


class _SceneBuilder:
    """Profiles and fit bases on the cutout for given trace offsets."""

    def __init__(self, psf, region, row_wavelength, trace, negative, params, n_xdisp):
        self.psf = psf
        self.columns = region.xdisp_index.astype(float)
        self.row_wavelength = row_wavelength
        self.trace = trace
        self.negative = negative
        self.params = params
        self.width_scale = 1.0
        order = params.bkg_order if params.subtract_background else -1
        self.background_basis = polynomial_basis(n_xdisp, order)

    @property
    def separate_background(self) -> bool:
        params = self.params
        return params.subtract_background and (
            params.bkg_smoothing_length > 1 or params.background_regions is not None
        )

    def trace_offsets(self, shift, negative_shift=None) -> list[np.ndarray]:
        """``(R, X)`` pixel offsets from each trace (positive, then the negative nod if any)."""
        offsets = [self.columns[None, :] - (self.trace + shift)[:, None]]
        if self.negative is not None:
            extra = shift if negative_shift is None else negative_shift
            offsets.append(self.columns[None, :] - (self.negative + extra)[:, None])
        return offsets

    def profiles(self, shift, negative_shift=None):
        """Each trace's reference profile (the negative nod's with its sign)."""
        # A width scale s stretches the profile: P_s(d) = P(d / s) / s.
        scale = self.width_scale
        return [
            sign * evaluate_profile(self.psf, offsets / scale, self.row_wavelength) / scale
            for sign, offsets in zip(
                (1.0, -1.0), self.trace_offsets(shift, negative_shift), strict=False
            )  # one or two traces
        ]

    def shift_derivatives(self, shift, negative_shift=None):
        """The derivative of each trace's profile in its shift (signed like :meth:`profiles`)."""
        # d/dshift P(d / s) / s = -P'(d / s) / s**2 with d = column - trace - shift.
        scale = self.width_scale
        return [
            -sign
            * evaluate_profile(self.psf, offsets / scale, self.row_wavelength, slope=True)
            / scale**2
            for sign, offsets in zip(
                (1.0, -1.0), self.trace_offsets(shift, negative_shift), strict=False
            )  # one or two traces
        ]

    def basis(self, profiles, with_background=True):
        n_rows, n_xdisp = profiles[0].shape
        terms = [p[:, None, :] for p in profiles]
        if with_background and self.background_basis.shape[0]:
            terms.append(
                np.broadcast_to(self.background_basis[None], (n_rows, *self.background_basis.shape))
            )
        return np.concatenate(terms, axis=1)


def _smooth_within_blocks(values: np.ndarray, length: int, n_blocks: int):
    """NaN-aware boxcar over rows within each integration: (mean, count), shaped like ``values``."""
    blocked = values.reshape(n_blocks, values.shape[0] // n_blocks, -1)
    mean, count = nan_boxcar(blocked, length, axis=1)
    return mean.reshape(values.shape), count.reshape(values.shape)


def _smoothed_background(fit: RowFit, n_profiles, components, basis, length, n_blocks):
    """
    Background of a joint (PSF + polynomial) fit, smoothed along dispersion.

    The polynomial coefficients of every row are averaged over ``length``
    rows (NaN-aware, within each integration); their covariance per variance
    component is propagated through the same average, for the background's
    share of the flux variance.

    Returns the background model ``(N, X)``, per-component coefficient
    covariances ``(N, K, K)`` and the rows with a background.
    """
    n_rows = fit.coefficients.shape[0]
    coefficients = fit.coefficients[:, n_profiles:].copy()
    operator = fit.pixel_weights[:, n_profiles:, :]
    n_terms = coefficients.shape[1]
    ok = fit.ok.copy()
    coefficients[~ok] = np.nan
    covariances = [
        np.einsum("nkx,nlx,nx->nkl", operator, operator, np.where(fit.used, v, 0.0))
        for v in components
    ]
    if length > 1:
        coefficients, count = _smooth_within_blocks(coefficients, length, n_blocks)
        smoothed = []
        for covariance in covariances:
            covariance = np.where(ok[:, None, None], covariance, np.nan).reshape(n_rows, -1)
            mean, cov_count = _smooth_within_blocks(covariance, length, n_blocks)
            # variance of a mean of n independent rows: mean variance / n
            with np.errstate(invalid="ignore", divide="ignore"):
                smoothed.append((mean / cov_count).reshape(n_rows, n_terms, n_terms))
        covariances = smoothed
        ok = count[:, 0] > 0
    model = np.nan_to_num(coefficients) @ basis
    return model, [np.nan_to_num(c) for c in covariances], ok


def _fit_in_batches(
    builder_basis, arrays, valid, params, n_rows_per_block, positive_terms, series_variance=None
):
    """
    Fit all rows in batches of whole integrations; returns one merged RowFit.

    With ``series_variance`` (the Poisson variance model of one integration,
    from the mean scene) a time series is fitted with weights shared by all
    integrations (:func:`fit_series`); otherwise every row iterates its own.
    """
    data, var_rnoise, var_poisson, var_flat = arrays
    n_total = data.shape[0]
    batch = max(n_rows_per_block, (ROWS_PER_BATCH // n_rows_per_block) * n_rows_per_block)
    if series_variance is not None:
        # Shared weights need no (N, P, P) systems: memory stays O(N X) in one go.
        batch = n_total
    parts = []
    starts = range(0, n_total, batch)
    for start in progress(starts, "optimal fits (row batches)", log):
        rows = slice(start, min(start + batch, n_total))
        inputs = (data[rows], var_rnoise[rows], var_poisson[rows], var_flat[rows], valid[rows])
        if series_variance is not None:
            parts.append(
                fit_series(
                    *inputs,
                    builder_basis(rows),
                    positive_terms,
                    series_variance,
                    reject_sigma=params.reject_sigma,
                    measure_misfit=True,
                    aligned_rows=MISFIT_ROWS,
                )
            )
        else:
            parts.append(
                fit_rows(
                    *inputs,
                    builder_basis(rows),
                    positive_terms,
                    reject_sigma=params.reject_sigma,
                    n_rows_per_block=n_rows_per_block,
                    measure_misfit=True,
                    aligned_rows=MISFIT_ROWS,
                )
            )
    if len(parts) == 1:
        return parts[0]
    return RowFit(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in RowFit.__annotations__)
    )


def _search_offset(per_row_chi2, base: np.ndarray, grid: np.ndarray, limit: float, what: str):
    """
    Global offset minimising the chi-square summed over rows, never clamped at a grid's edge.

    ``per_row_chi2(shift)`` gives the chi-square of every row for a per-row
    shift; trials are ``base + grid``. When the best trial is the grid's
    first or last point, a 1 px grid over ``+-limit`` finds the basin and
    ``grid`` is searched again around it.

    Raises
    ------
    InputDataError
        The optimum lies at or beyond ``limit``.
    """
    step, _, on_edge = best_shift(chi2_curves(per_row_chi2, base, grid), grid)
    if not on_edge:
        return step
    wide = np.arange(-np.floor(limit), np.floor(limit) + 0.5, 1.0)
    centre, _, on_edge = best_shift(chi2_curves(per_row_chi2, base, wide), wide)
    if on_edge:
        raise InputDataError(
            f"the {what} keeps improving up to {limit:g} px from the WCS trace: the source "
            "is not where the WCS puts it. Check the pointing (dithered_ra/dec), give "
            "position_offset, or widen fit_half_width."
        )
    step, _, _ = best_shift(chi2_curves(per_row_chi2, base + centre, grid), grid)
    return centre + step


def _location(builder, mean_data, mean_vars, mean_valid, params, negative_present):
    """Optimise the trace offset on the integration-mean image; returns (shift, neg, solution)."""
    n_rows = mean_data.shape[0]
    zero = np.zeros(n_rows)
    clean = np.where(mean_valid, mean_data, 0.0)
    # Weights fixed once from a fit at the nominal position (with outlier
    # rejection), so every trial shift costs one batched linear solve. Judged
    # against the noise alone: the weights only steer the shift search, where a
    # hit kept would do more harm than a misfit core pixel left out.
    negative_start = zero if negative_present else None
    start_profiles = builder.profiles(zero, negative_start)
    start = fit_rows(
        mean_data,
        *mean_vars,
        mean_valid,
        builder.basis(start_profiles),
        len(start_profiles),
        reject_sigma=params.reject_sigma or None,
        max_iterations=3,
    )
    weights = np.where(start.used, 1.0 / start.variance, 0.0)
    limit = MAX_TRACE_SHIFT
    if params.fit_half_width is not None:
        # The PSF core (a few pixels) must stay inside the fitted window.
        limit = min(limit, max(params.fit_half_width - 3.0, 1.0))

    def chi2(shift, negative_shift=None):
        basis = builder.basis(builder.profiles(shift, negative_shift))
        coefficients, _, ok = solve_rows(clean, weights, basis, pixel_weights=False)
        residual = clean - evaluate_rows(coefficients, basis)
        value = np.sum(weights * residual**2, axis=1)
        value[~ok] = np.nan
        return value

    shift = zero.copy()
    negative_shift = None if not negative_present else zero.copy()
    local = None
    for _round in range(2 if negative_present else 1):

        def positive(trial, fixed=negative_shift):
            return chi2(trial, fixed)

        shift = shift + _search_offset(positive, shift, COARSE_SHIFTS, limit, "trace offset")
        if params.fit_trace_order >= 0:
            curves = chi2_curves(positive, shift, FINE_SHIFTS)
            local = fit_shift_polynomial(curves, FINE_SHIFTS, params.fit_trace_order)
            shift = shift + local.shift
        else:
            offset, _, _ = best_shift(chi2_curves(positive, shift, FINE_SHIFTS), FINE_SHIFTS)
            shift = shift + offset
        if negative_present:

            def negative(trial, fixed=shift):
                return chi2(fixed, trial)

            for grid in (COARSE_SHIFTS, FINE_SHIFTS):
                negative_shift = negative_shift + _search_offset(
                    negative, negative_shift, grid, limit, "negative nod offset"
                )
    if params.optimize_psf_width:
        builder.width_scale = _fit_width_scale(builder, chi2, shift, negative_shift)
        offset, _, _ = best_shift(
            chi2_curves(lambda trial: chi2(trial, negative_shift), shift, FINE_SHIFTS),
            FINE_SHIFTS,
        )
        shift = shift + offset
    # Coefficients relative to the WCS trace (the polynomial describes the drift).
    order = max(params.fit_trace_order, 0)
    coefficients = np.polynomial.polynomial.polyfit(np.linspace(-1.0, 1.0, n_rows), shift, order)
    empty = np.empty(0)
    solution = ShiftSolution(
        shift.copy(),
        coefficients,
        empty if local is None else local.block_rows,
        empty if local is None else local.block_shifts,
        empty if local is None else local.block_errors,
    )
    return shift, negative_shift, solution


def _fit_width_scale(builder, chi2, shift, negative_shift) -> float:
    """
    The PSF width scale minimising the summed chi-square (log-spaced trials of 2.5%).

    The trial grid follows an optimum on its edge, within WIDTH_SCALE_LIMITS.

    Raises
    ------
    InputDataError
        The best scale lies outside WIDTH_SCALE_LIMITS.
    """
    centre = 1.0
    log_steps = np.log(WIDTH_SCALE_STEPS)
    while True:
        scales = centre * WIDTH_SCALE_STEPS
        totals = []
        for scale in scales:
            builder.width_scale = scale
            totals.append(np.nansum(chi2(shift, negative_shift)))
        best, _, on_edge = parabola_minimum(log_steps, np.asarray(totals))
        centre = float(centre * np.exp(best))
        if not on_edge:
            break
        if not WIDTH_SCALE_LIMITS[0] < centre < WIDTH_SCALE_LIMITS[1]:
            raise InputDataError(
                f"the PSF width scale keeps improving beyond {centre:.2f} (allowed "
                f"{WIDTH_SCALE_LIMITS[0]}-{WIDTH_SCALE_LIMITS[1]}): the psf reference does not "
                "describe these data; give a PSF made for them (lrs_psf)"
            )
    log.info(f"PSF width scale fitted: {centre:.3f}")
    return centre


@dataclass
class _Geometry:
    """Where the source is on the cutout: region, wavelengths, traces, rows with a PSF.

    ``wide_region`` is the whole data region, where a profile is measured
    (the fits may use a narrower window, ``region``).
    """

    region: LrsRegion
    wavelength: np.ndarray
    trace: np.ndarray
    negative: np.ndarray | None
    row_wavelength: np.ndarray
    keep: np.ndarray
    wide_region: LrsRegion


def _geometry(exposure: LrsExposure, params: OptimalParameters, psf: PsfTable) -> _Geometry:
    """The cutout, its traces and the rows the PSF can describe."""
    region = lrs_exposure.data_region(exposure, (params.disp_start, params.disp_stop))
    wavelength = lrs_exposure.region_wavelengths(exposure, region)
    trace, negative = _nominal_traces(exposure, region, wavelength, params)
    wide_region = region
    if params.fit_half_width is not None and params.background_regions is None:
        region, wavelength = _fit_window(region, wavelength, trace, negative, params)
    row_wavelength = _row_wavelength(wavelength, region, trace)
    covered = (row_wavelength >= psf.wave[0]) & (row_wavelength <= psf.wave[-1])
    if not covered.any():
        raise InputDataError(
            f"the PSF reference file {psf.source} covers {psf.wave[0]:.2f}-{psf.wave[-1]:.2f} um, "
            f"none of the data's {np.nanmin(row_wavelength):.2f}-"
            f"{np.nanmax(row_wavelength):.2f} um"
        )
    n_uncovered = int((np.isfinite(row_wavelength) & ~covered).sum())
    if n_uncovered:
        log.warning(
            f"{n_uncovered} spectral element(s) lie outside the PSF file's wavelengths "
            f"({psf.wave[0]:.2f}-{psf.wave[-1]:.2f} um) and are not extracted"
        )
    return _Geometry(
        region, wavelength, trace, negative, row_wavelength, covered & np.isfinite(trace),
        wide_region,
    )  # fmt: skip


def _valid_pixels(
    pixels: LrsPixels, keep: np.ndarray, reject_spikes: bool
) -> tuple[np.ndarray, int, int]:
    """Usable pixels (see :func:`_usable`), the finite pixels with bad variance, the spikes."""
    total_var = sum(pixels.variances)
    valid = np.isfinite(pixels.data) & np.isfinite(total_var) & (total_var > 0)
    # Unlike box extraction (jwst parity), the fit also skips NON_SCIENCE
    # pixels: the profile and background must describe every pixel used.
    valid &= keep[None, :, None] & ~pixels.non_science
    n_bad_variance = int((np.isfinite(pixels.data) & ~(total_var > 0)).sum())
    n_spikes = 0
    if reject_spikes:
        # Before any fit: a hit on a faint row's core pulls the fluxes, the background and a
        # measured profile (which spreads it over the rows around) past what a fit's own
        # rejection can undo.
        spikes = spectral_spikes(pixels.data, np.where(valid, total_var, 0.0), valid)
        valid &= ~spikes
        n_spikes = int(spikes.sum())
    return valid, n_bad_variance, n_spikes


def _checked(valid: np.ndarray, n_bad_variance: int, n_spikes: int) -> np.ndarray:
    if n_bad_variance:
        log.warning(f"{n_bad_variance} pixel(s) with zero or negative variance are not used")
    if n_spikes:
        log.info(f"{n_spikes} single-pixel spike(s) (unflagged cosmic rays) left out")
    if not valid.any():
        raise InputDataError("no pixel with finite data and positive variance on the trace rows")
    return valid


def _usable(pixels: LrsPixels, keep: np.ndarray, reject_spikes: bool = True) -> np.ndarray:
    """Pixels a fit can use: finite, positive variance, kept row, not NON_SCIENCE nor a spike."""
    return _checked(*_valid_pixels(pixels, keep, reject_spikes))


#: Integrations read at once when a time series' whole data region is averaged.
READ_CHUNK = 16


def _read_with_wide_mean(
    exposure, geometry, keep, reject_spikes: bool = True
) -> tuple[LrsPixels, np.ndarray, _MeanImage]:
    """
    The fit window's pixels and the whole data region's integration mean, in one pass.

    The region is read a few integrations at a time (every detector row is
    a memory page: reading the window and its sides separately would touch
    each page twice). Only the window's pixels are kept, contiguous, for the
    row fits; the rest only enters the mean image, where the profile is
    measured, so no copy of the whole region of every integration is made.
    """
    wide, region = geometry.wide_region, geometry.region
    first = int(region.xdisp_index[0] - wide.xdisp_index[0])
    window = slice(first, first + region.xdisp_index.size)
    data = exposure.model.data
    n_int = data.shape[0] if data.ndim == 3 else 1
    fields = LrsPixels.__dataclass_fields__
    pixels = valid = total = None
    n_bad_variance = n_spikes = 0
    for start in range(0, n_int, READ_CHUNK):
        chunk = slice(start, min(start + READ_CHUNK, n_int))
        part = lrs_exposure.read_pixels(exposure, wide, chunk)
        part_valid, n_bad, n_spiked = _valid_pixels(part, keep, reject_spikes)
        n_bad_variance += n_bad
        n_spikes += n_spiked
        if pixels is None:
            shape = (n_int, *part.data.shape[1:-1], region.xdisp_index.size)
            pixels = LrsPixels(**{name: np.empty(shape, getattr(part, name).dtype)
                                  for name in fields})  # fmt: skip
            valid = np.empty(shape, bool)
            total = _MeanSum(part.data.shape[1:])
        for name in fields:
            getattr(pixels, name)[chunk] = getattr(part, name)[..., window]
        valid[chunk] = part_valid[..., window]
        total.add(part, part_valid)
    return pixels, _checked(valid, n_bad_variance, n_spikes), total.image()


def _select_background_regions(exposure, params, geometry, builder, valid):
    """With extract1d background regions, the fit sees the PSF core and those regions only."""
    background_weights = build_box_apertures(
        params.background_regions, exposure, geometry.region, geometry.wavelength
    ).background
    if background_weights is None or not (background_weights > 0).any():
        raise ParameterError("the extract1d bkg_coeff regions hold no pixel of the data")
    core = np.abs(sum(builder.profiles(np.zeros(geometry.trace.size))))
    near = core >= BACKGROUND_PROFILE_LEVEL * core.max(axis=1, keepdims=True)
    return valid & (near | (background_weights > 0))[None]


@dataclass
class _MeanImage:
    """The mean of the integrations and its variances (higher S/N than one integration)."""

    data: np.ndarray
    variances: list[np.ndarray]
    valid: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, pixels: LrsPixels, valid: np.ndarray) -> _MeanImage:
        total = _MeanSum(pixels.data.shape[1:])
        total.add(pixels, valid)
        return total.image()

    def columns(self, chosen: slice) -> _MeanImage:
        """The same image on a range of columns (views)."""
        return _MeanImage(self.data[:, chosen], [v[:, chosen] for v in self.variances],
                          self.valid[:, chosen], self.count[:, chosen])  # fmt: skip


class _MeanSum:
    """Running sums of valid pixels over integrations, for :class:`_MeanImage`."""

    def __init__(self, shape):
        self.count = np.zeros(shape, int)
        self.sums = [np.zeros(shape) for _ in range(4)]

    def add(self, pixels: LrsPixels, valid: np.ndarray) -> None:
        self.count += valid.sum(axis=0)
        for total, values in zip(self.sums, (pixels.data, *pixels.variances), strict=True):
            np.add(total, np.sum(values, axis=0, where=valid), out=total)

    def image(self) -> _MeanImage:
        safe_count = np.maximum(self.count, 1)
        data, *variances = self.sums
        return _MeanImage(data / safe_count, [v / safe_count**2 for v in variances],
                          self.count > 0, self.count)  # fmt: skip


def _series_variance(mean: _MeanImage, row_basis, n_profiles, params) -> np.ndarray:
    """
    The Poisson variance model of one integration of a time series, from the mean scene.

    The scene fitted to the mean image is noise-free for practical purposes
    and the same for every integration, so the weights are shared
    (:func:`~mirispec_steps.core.optimal.fit_series`).
    """
    mean_fit = fit_rows(
        mean.data,
        *mean.variances,
        mean.valid,
        row_basis,
        n_profiles,
        reject_sigma=params.reject_sigma or None,
        measure_misfit=True,
        aligned_rows=MISFIT_ROWS,
    )
    source_part = np.einsum(
        "np,npx->nx", mean_fit.coefficients[:, :n_profiles], row_basis[:, :n_profiles]
    )
    mean_signal = np.abs(np.nan_to_num(source_part)) + np.clip(
        np.nan_to_num(mean_fit.model - source_part), 0.0, None
    )
    # VAR_POISSON of one integration: the mean image's times the count.
    return poisson_variance_model(
        mean.variances[1] * np.maximum(mean.count, 1), mean_signal, mean.valid, mean.data.shape[0]
    )


@dataclass
class _FluxStatistics:
    """Per-row flux and background variances, effective pixels, background level, rejections."""

    variances: list[np.ndarray]
    background_variances: list[np.ndarray]
    npixels: np.ndarray
    background_level: np.ndarray
    n_rejected: int
    rejected_rows: np.ndarray


def _flux_statistics(fit, flat, profiles, bkg_basis, joint_background, shape):
    """Variance terms of every row's flux from the fit's linear pixel weights."""
    n_int, n_rows, _ = shape
    n_profiles = len(profiles)
    # NaN variances sit on unused pixels (zero weight); zero them (our copies).
    for component in (flat[1], flat[3]):
        np.nan_to_num(component, copy=False)
    if isinstance(fit, SeriesFit):
        # Shared rows: (R, X) weights against per-integration (B, R, X) arrays.
        statistics = _row_statistics(
            fit.operator[:, 0, :],
            fit.used,
            fit.variance,
            (flat[1].reshape(shape), fit.var_poisson_model, flat[3].reshape(shape)),
            profiles[0],
            fit.coefficients[:, n_profiles:].reshape(n_int, n_rows, -1),
            bkg_basis,
            joint_background,
        )
        statistics = [np.array(np.broadcast_to(v, (n_int, n_rows))).ravel() for v in statistics]
        if fit.own is not None:
            rows, own = fit.own_rows, fit.own
            own_statistics = _row_statistics(
                own.pixel_weights[:, 0, :],
                own.used,
                own.variance,
                (flat[1][rows], own.var_poisson_model, flat[3][rows]),
                profiles[0][rows % n_rows],
                fit.coefficients[rows, n_profiles:],
                bkg_basis,
                joint_background,
            )
            for values, own_values in zip(statistics, own_statistics, strict=True):
                values[rows] = own_values
        rejected_rows = np.zeros(n_int * n_rows, dtype=bool)
        if fit.own is not None:
            rejected_rows[fit.own_rows] = fit.own.rejected.any(axis=1)
        n_rejected = fit.n_rejected
    else:
        statistics = _row_statistics(
            fit.pixel_weights[:, 0, :],
            fit.used,
            fit.variance,
            (flat[1], fit.var_poisson_model, flat[3]),
            np.tile(profiles[0], (n_int, 1)),
            fit.coefficients[:, n_profiles:],
            bkg_basis,
            joint_background,
        )
        rejected_rows = fit.rejected.any(axis=1)
        n_rejected = int(fit.rejected.sum())
    return _FluxStatistics(
        list(statistics[0:3]),
        list(statistics[3:6]),
        statistics[6],
        statistics[7],
        n_rejected,
        rejected_rows,
    )


def _with_smoothed_background(stats, fit, profiles, background_model, bkg_basis, covariances):
    """Background level and variance of the separately fitted (smoothed) background."""
    n_int = fit.coefficients.shape[0] // profiles[0].shape[0]
    source_profile = np.tile(profiles[0], (n_int, 1))
    weights = fit.pixel_weights[:, 0, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.sum(source_profile * background_model, axis=1) / np.sum(source_profile, axis=1)
    stats.background_level = np.nan_to_num(level)
    projector = np.einsum("nx,kx->nk", weights, bkg_basis)
    stats.background_variances = [
        np.einsum("nk,nkl,nl->n", projector, cov, projector) for cov in covariances
    ]
    stats.variances = [
        v + b for v, b in zip(stats.variances, stats.background_variances, strict=True)
    ]


def _beyond_noise(fit, science: np.ndarray, fit_pixels: np.ndarray, threshold: float) -> int:
    """Fitted pixels the scene model misses by more than ``threshold`` noise sigma."""
    n_total = science.shape[0]
    variance, used = fit.variance, fit.used
    if variance.shape[0] != n_total:  # a time series' shared weights: one integration's rows
        repeats = n_total // variance.shape[0]
        variance, used = np.tile(variance, (repeats, 1)), np.tile(used, (repeats, 1))
    with np.errstate(invalid="ignore"):
        score = np.abs(science - fit.model) / np.sqrt(variance)
    return int(np.count_nonzero(fit_pixels & used & (score > threshold)))


def _report_rejections(n_rejected: int, n_beyond_noise: int, fit_pixels: np.ndarray,
                       params) -> None:  # fmt: skip
    """
    Log the rejections; warn when the scene model misses many pixels by more than their noise.

    Outliers are judged against the misfit the profile shows, so a scene model that does not
    describe the data (a background gradient, a PSF the data do not follow) no longer loses
    its pixels: the pixels it misses beyond the noise tell it instead.
    """
    if n_rejected:
        log.info(f"Rejected {n_rejected} outlier pixel(s) (reject_sigma={params.reject_sigma})")
    n_fitted = max(int(fit_pixels.sum()), 1)
    if params.reject_sigma and n_beyond_noise > REJECTED_FRACTION_WARNING * n_fitted:
        log.warning(
            f"{100 * n_beyond_noise / n_fitted:.1f}% of the fitted pixels differ from the scene "
            f"model by more than {params.reject_sigma:g} sigma of their noise: the scene model "
            "does not describe the data (background gradient? try a higher bkg_order, "
            "optimize_psf_width, profile='auto', or a PSF file matching the data)"
        )


def _separate_background(flat, row_basis, fit_pixels, params, n_profiles, series_variance,
                         builder, n_int):  # fmt: skip
    """
    A background fitted jointly with the PSF on every row, then smoothed along dispersion.

    Returns the background model ``(N, X)`` and its coefficient covariances
    per variance component.
    """
    n_rows = row_basis.shape[0]
    joint = _fit_in_batches(
        lambda rows: row_basis, tuple(flat), fit_pixels, params, n_rows, n_profiles,
        series_variance,
    )  # fmt: skip
    if isinstance(joint, SeriesFit):
        joint = joint.expand()
    background_model, covariances, ok = _smoothed_background(
        joint,
        n_profiles,
        (flat[1], joint.var_poisson_model, flat[3]),
        builder.background_basis,
        params.bkg_smoothing_length,
        n_int,
    )
    if not ok.any():
        raise ParameterError(
            f"no row has enough pixels for a background polynomial of order {params.bkg_order}"
        )
    return background_model, covariances


@dataclass
class PreparedScene:
    """
    An exposure made ready for the row fits: cutout, usable pixels, trace and profiles.

    Attributes
    ----------
    geometry : _Geometry
        Cutout, wavelengths, traces and the rows the PSF describes.
    pixels : LrsPixels
        Data and variances on the cutout.
    valid : ndarray
        ``(n_int, n_rows, n_xdisp)`` pixels the fits may use.
    builder : _SceneBuilder
        Reference profiles and background basis.
    mean : _MeanImage or None
        The integration-mean image (when a location or profile fit needed it).
    shift, negative_shift : ndarray or None
        Fitted trace offsets from the WCS, per row.
    solution : ShiftSolution or None
        The location fit.
    choice : ProfileChoice
        The profiles to fit and how they were chosen.
    """

    geometry: _Geometry
    pixels: LrsPixels
    valid: np.ndarray
    builder: _SceneBuilder
    mean: _MeanImage | None
    shift: np.ndarray
    negative_shift: np.ndarray | None
    solution: ShiftSolution | None
    choice: ProfileChoice


def _profile_scene(geometry, builder, mean, wide_mean, psf, params) -> ProfileScene:
    """The image a profile is measured on: the whole data region (sky beyond the wings)."""
    if wide_mean is None:
        return ProfileScene(builder, mean)
    region = geometry.wide_region
    wide = _SceneBuilder(psf, region, geometry.row_wavelength, geometry.trace, geometry.negative,
                         params, region.xdisp_index.size)  # fmt: skip
    wide.width_scale = builder.width_scale
    return ProfileScene(wide, wide_mean)


def prepare_scene(exposure: LrsExposure, params: OptimalParameters, psf: PsfTable) -> PreparedScene:
    """
    Geometry, usable pixels, trace location and source profiles of an exposure.

    The first stages of :func:`extract_optimal`, also used by the PSF
    builder (:mod:`mirispec_steps.lrs.psf_builder`).

    Parameters
    ----------
    exposure : LrsExposure
        Checked LRS cal or calints; never modified.
    params : OptimalParameters
        Resolved parameters.
    psf : PsfTable
        The PSF reference.

    Returns
    -------
    PreparedScene
        Everything the row fits need.
    """
    geometry = _geometry(exposure, params, psf)
    region, keep = geometry.region, geometry.keep
    unmodelled_nod = exposure.nod_subtracted and geometry.negative is None
    measure = params.profile != "psf" and not unmodelled_nod
    wide_mean = None
    if measure and geometry.wide_region is not region:
        # The profile is measured on the whole region (the sky beyond the source's
        # wings); the window's mean is part of it.
        pixels, valid, wide_mean = _read_with_wide_mean(
            exposure, geometry, keep, params.reject_spikes
        )
    else:
        pixels = lrs_exposure.read_pixels(exposure, region)
        valid = _usable(pixels, keep, params.reject_spikes)
    n_int, n_rows, n_xdisp = pixels.data.shape
    builder = _SceneBuilder(
        psf, region, geometry.row_wavelength, geometry.trace, geometry.negative, params, n_xdisp
    )
    if params.background_regions is not None and params.subtract_background:
        valid = _select_background_regions(exposure, params, geometry, builder, valid)
    locate = (
        params.optimize_psf_location or params.fit_trace_order >= 0 or params.optimize_psf_width
    )
    needs_mean = locate or n_int > 1 or params.profile != "psf"
    if wide_mean is not None:
        first = int(region.xdisp_index[0] - geometry.wide_region.xdisp_index[0])
        mean = wide_mean.columns(slice(first, first + n_xdisp))
    else:
        mean = _MeanImage.of(pixels, valid) if needs_mean else None
    shift, negative_shift, solution = np.zeros(n_rows), None, None
    if locate:
        shift, negative_shift, solution = _location(
            builder, mean.data, mean.variances, mean.valid, params, geometry.negative is not None
        )
        log.info(
            f"Trace offset from the WCS: median {np.median(shift):+.3f} px "
            f"(range {shift.min():+.3f}..{shift.max():+.3f})"
            + (
                f"; negative nod {np.median(negative_shift):+.3f} px"
                if negative_shift is not None
                else ""
            )
        )
    measured = None
    if measure:
        measured = _profile_scene(geometry, builder, mean, wide_mean, psf, params)
    choice = choose_profiles(
        params.profile, builder, shift, negative_shift, params.reject_sigma, unmodelled_nod,
        measured,
    )  # fmt: skip
    return PreparedScene(
        geometry, pixels, valid, builder, mean, shift, negative_shift, solution, choice
    )


def extract_optimal(
    exposure: LrsExposure, params: OptimalParameters, psf: PsfTable
) -> OptimalProducts:
    """
    Optimal-extract an unrectified LRS exposure (all integrations at once).

    Parameters
    ----------
    exposure : LrsExposure
        Checked LRS cal or calints; never modified.
    params : OptimalParameters
        Resolved parameters.
    psf : PsfTable
        The PSF.

    Returns
    -------
    OptimalProducts
        x1d model and diagnostics.
    """
    scene = prepare_scene(exposure, params, psf)
    geometry, pixels, valid, builder = scene.geometry, scene.pixels, scene.valid, scene.builder
    region, keep = geometry.region, geometry.keep
    mean, shift, choice = scene.mean, scene.shift, scene.choice
    n_int, n_rows, n_xdisp = pixels.data.shape
    flat = [a.reshape(-1, n_xdisp) for a in (pixels.data, *pixels.variances)]
    fit_pixels = valid.reshape(-1, n_xdisp)

    profiles = choice.profiles
    n_profiles = len(profiles)
    row_basis = builder.basis(profiles)
    series_variance = None
    if n_int > 1:
        series_variance = _series_variance(mean, row_basis, n_profiles, params)

    science, fit_basis = flat[0], row_basis
    background_model = bkg_covariances = None
    separate = builder.separate_background
    if separate:
        background_model, bkg_covariances = _separate_background(
            flat, row_basis, fit_pixels, params, n_profiles, series_variance, builder, n_int
        )
        science = science - background_model
        fit_basis = builder.basis(profiles, with_background=False)

    fit = _fit_in_batches(
        lambda rows: fit_basis, (science, *flat[1:]), fit_pixels, params, n_rows, n_profiles,
        series_variance,
    )  # fmt: skip
    flux = fit.coefficients[:, 0]
    if separate and isinstance(fit, SeriesFit):
        fit = fit.expand()
    bkg_basis = builder.background_basis
    stats = _flux_statistics(
        fit, flat, profiles, bkg_basis, not separate and bkg_basis.shape[0] > 0,
        (n_int, n_rows, n_xdisp),
    )  # fmt: skip
    if separate:
        _with_smoothed_background(
            stats, fit, profiles, background_model, bkg_basis, bkg_covariances
        )
    if choice.flux_variance is not None:
        # The measured profile's own noise: common to all integrations, like the flat's.
        relative = np.tile(np.nan_to_num(choice.flux_variance), n_int)
        stats.variances[2] = stats.variances[2] + np.nan_to_num(flux) ** 2 * relative
    n_beyond_noise = _beyond_noise(fit, science, fit_pixels, params.reject_sigma or np.inf)
    _report_rejections(stats.n_rejected, n_beyond_noise, fit_pixels, params)
    failed = keep[None, :] & ~fit.ok.reshape(n_int, n_rows)
    if failed.any():
        log.warning(f"{int(failed.sum())} spectral element(s) could not be fitted; flagged")

    x1d = _x1d(exposure, geometry, flux, stats, shift, choice)
    scene_cut = fit.model + background_model if separate else fit.model
    scene_cut = scene_cut.reshape(n_int, n_rows, n_xdisp)
    scene_cut[:, ~keep] = np.nan
    profile_full = np.zeros(exposure.shape)
    profile_full[region.slices] = sum(profiles)
    return OptimalProducts(
        x1d=x1d,
        profile=profile_full,
        trace=geometry.trace + shift,
        rows=region.disp_index,
        shift=scene.solution,
        n_rejected=stats.n_rejected,
        scene_cutout=scene_cut,
        used_cutout=valid,
        data=exposure.model.data,
        slices=region.slices,
        profile_choice=choice,
        profile_cutout=profiles[0],
        reference_cutout=choice.reference[0],
        row_wavelength=geometry.row_wavelength,
    )


def _x1d(exposure, geometry: _Geometry, flux, stats: _FluxStatistics, shift, choice):
    """The x1d of the fitted fluxes (rows without a PSF are left out)."""
    region, keep = geometry.region, geometry.keep
    n_rows = keep.size
    n_int = flux.size // n_rows

    def per_integration(values):
        return values.reshape(n_int, n_rows)[:, keep]

    dq = np.where(per_integration(stats.rejected_rows), flags.OUTLIER, 0).astype(np.uint32)
    columns = SpectrumColumns(
        wavelength=geometry.row_wavelength[keep],
        flux=per_integration(flux),
        var_poisson=per_integration(stats.variances[1]),
        var_rnoise=per_integration(stats.variances[0]),
        var_flat=per_integration(stats.variances[2]),
        background=per_integration(stats.background_level * stats.npixels),
        bkg_var_poisson=per_integration(stats.background_variances[1]),
        bkg_var_rnoise=per_integration(stats.background_variances[0]),
        bkg_var_flat=per_integration(stats.background_variances[2]),
        npixels=per_integration(stats.npixels),
        dq=dq,
        surface_brightness=False,
    )
    final_trace = geometry.trace + shift
    good_rows = np.flatnonzero(keep)
    centre_row = good_rows[good_rows.size // 2]
    x1d = lrs_exposure.build_lrs_x1d(
        exposure,
        columns,
        region,
        (float(final_trace[centre_row]), float(region.disp_index[centre_row])),
        (float(region.xdisp_index[0]), float(region.xdisp_index[-1])),
        good_rows,
    )
    x1d.spec[0].extraction_type = "OPTIMAL"
    # Which profile made the fluxes: in the product's tree and as a FITS keyword.
    x1d.mirispec_profile = choice.record()
    x1d.extra_fits = {
        "PRIMARY": {"header": [["OPTPROF", choice.kind.upper(), "mirispec optimal profile"]]}
    }
    return x1d
