"""LRS optimal extraction: from a datamodel, a PSF table and parameters to an x1d model.

The datamodel/reference-file layer between :mod:`lrs_optimal_extract_step`
and the pure-NumPy core (:mod:`core.optimal`, :mod:`core.trace_fit`,
:mod:`core.psf_profile`). The trace comes from the WCS (the dithered source
position, or the aperture reference point), is optionally refined by the
chi-square of the scene model (one global shift, or a polynomial along
dispersion), and every row of every integration is fitted with the PSF
profile (plus the negative nod and a background polynomial) by inverse
model-variance weighting.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from stdatamodels.jwst.datamodels import dqflags

from mirispec_steps.adapters import lrs as lrs_adapter
from mirispec_steps.adapters.x1d import (
    SpectrumColumns,
    describe_spectrum,
    first_integration,
    make_spec_model,
    make_tso_spec_model,
    make_x1d_model,
)
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
from mirispec_steps.core.psf_profile import PsfTable, evaluate_profile
from mirispec_steps.core.trace_fit import (
    ShiftSolution,
    best_shift,
    chi2_curves,
    fit_shift_polynomial,
)
from mirispec_steps.errors import InputDataError, ParameterError
from mirispec_steps.lrs_box import BoxParameters, build_box_apertures
from mirispec_steps.progress import progress

__all__ = ["OptimalParameters", "OptimalProducts", "extract_optimal"]

log = logging.getLogger(__name__)

NOD_PAIR_PATTERNS = ("ALONG-SLIT-NOD", "2-POINT-NOD")
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]
#: Rows fitted per batch (bounds memory for long time series).
ROWS_PER_BATCH = 20000
#: Profile level (fraction of the row's peak) below which a pixel counts as background.
BACKGROUND_PROFILE_LEVEL = 2e-3
#: Fraction of rejected pixels above which the scene model is reported as inadequate.
REJECTED_FRACTION_WARNING = 0.005


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


def _nominal_traces(model, region, wavelength, params):
    """Positive (and optionally negative-nod) traces from the WCS, per cutout row."""
    exp_type = str(model.meta.exposure.type).upper()
    sky = None
    if params.use_source_posn and exp_type == "MIR_LRS-FIXEDSLIT":
        sky = lrs_adapter.dithered_sky_position(model)
        if sky is None:
            log.warning("dithered source position unknown; using the aperture reference point")
    if sky is None:
        sky = lrs_adapter.reference_sky_position(model)
    if sky is None:
        raise InputDataError(
            "cannot place the PSF: neither meta.dither.dithered_ra/dec nor the WCS reference "
            "point (wcsinfo.v2_ref/v3_ref through a v2v3 frame) give the source position"
        )
    trace = lrs_adapter.source_trace(model, region, wavelength, sky=sky)
    if trace is None or not np.any(np.isfinite(trace)):
        raise InputDataError("the WCS puts the source nowhere on the detector")
    trace = trace + params.position_offset
    negative = None
    if params.model_nod_pair:
        subtracted = str(model.meta.cal_step.bkg_subtract).upper() == "COMPLETE"
        pattern = str(model.meta.dither.primary_type).upper() in NOD_PAIR_PATTERNS
        if not subtracted:
            log.info("Input is not nod-subtracted: no negative trace modelled")
        elif not pattern:
            log.info("Input is not a two-point nod: no negative trace modelled")
        else:
            other = lrs_adapter.mirrored_nod_sky_position(model)
            if other is not None:
                negative = lrs_adapter.source_trace(model, region, wavelength, sky=other)
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
    narrowed = lrs_adapter.LrsRegion(
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

    def profiles(self, shift, negative_shift=None):
        # A width scale s stretches the profile: P_s(d) = P(d / s) / s.
        scale = self.width_scale
        offsets = self.columns[None, :] - (self.trace + shift)[:, None]
        profiles = [evaluate_profile(self.psf, offsets / scale, self.row_wavelength) / scale]
        if self.negative is not None:
            extra = shift if negative_shift is None else negative_shift
            offsets = self.columns[None, :] - (self.negative + extra)[:, None]
            profiles.append(
                -evaluate_profile(self.psf, offsets / scale, self.row_wavelength) / scale
            )
        return profiles

    def basis(self, profiles, with_background=True):
        n_rows, n_xdisp = profiles[0].shape
        terms = [p[:, None, :] for p in profiles]
        if with_background and self.background_basis.shape[0]:
            terms.append(
                np.broadcast_to(self.background_basis[None], (n_rows, *self.background_basis.shape))
            )
        return np.concatenate(terms, axis=1)


def _smooth_rows(values: np.ndarray, length: int, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxcar over rows within each block, NaN-aware: (mean, count) along axis 0."""
    shape = values.shape
    blocked = values.reshape(n_blocks, shape[0] // n_blocks, -1)
    finite = np.isfinite(blocked)
    filled = np.where(finite, blocked, 0.0)
    half = length // 2
    padded = np.pad(filled, ((0, 0), (half + 1, half), (0, 0)))
    counts = np.pad(finite.astype(float), ((0, 0), (half + 1, half), (0, 0)))
    window_sum = np.cumsum(padded, axis=1)
    window_count = np.cumsum(counts, axis=1)
    total = window_sum[:, length:] - window_sum[:, :-length]
    count = window_count[:, length:] - window_count[:, :-length]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return mean.reshape(shape), count.reshape(shape)


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
        coefficients, count = _smooth_rows(coefficients, length, n_blocks)
        smoothed = []
        for covariance in covariances:
            covariance = np.where(ok[:, None, None], covariance, np.nan).reshape(n_rows, -1)
            mean, cov_count = _smooth_rows(covariance, length, n_blocks)
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
                )
            )
    if len(parts) == 1:
        return parts[0]
    return RowFit(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in RowFit.__annotations__)
    )


def _location(builder, mean_data, mean_vars, mean_valid, params, negative_present):
    """Optimise the trace offset on the integration-mean image; returns (shift, neg, solution)."""
    n_rows = mean_data.shape[0]
    zero = np.zeros(n_rows)
    clean = np.where(mean_valid, mean_data, 0.0)
    # Weights fixed once from a fit at the nominal position (with outlier
    # rejection), so every trial shift costs one batched linear solve.
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

    def chi2(shift, negative_shift=None):
        basis = builder.basis(builder.profiles(shift, negative_shift))
        coefficients, _, ok = solve_rows(clean, weights, basis, pixel_weights=False)
        residual = clean - evaluate_rows(coefficients, basis)
        value = np.sum(weights * residual**2, axis=1)
        value[~ok] = np.nan
        return value

    def refine(function, start, grids):
        """Global offset minimising the summed chi-square, grid by grid."""
        for grid in grids:
            offset, _ = best_shift(chi2_curves(function, start, grid), grid)
            start = start + offset
        return start

    coarse = np.arange(-2.0, 2.0001, 0.25)
    fine = np.arange(-0.25, 0.2501, 0.05)
    shift = zero.copy()
    negative_shift = None if not negative_present else zero.copy()
    local = None
    for _round in range(2 if negative_present else 1):

        def positive(trial, fixed=negative_shift):
            return chi2(trial, fixed)

        shift = refine(positive, shift, (coarse,))
        if params.fit_trace_order >= 0:
            curves = chi2_curves(positive, shift, fine)
            local = fit_shift_polynomial(curves, fine, params.fit_trace_order)
            shift = shift + local.shift
        else:
            shift = refine(positive, shift, (fine,))
        if negative_present:

            def negative(trial, fixed=shift):
                return chi2(fixed, trial)

            negative_shift = refine(negative, negative_shift, (coarse, fine))
    if params.optimize_psf_width:
        scales = np.arange(0.8, 1.2501, 0.025)
        totals = []
        for scale in scales:
            builder.width_scale = scale
            totals.append(np.nansum(chi2(shift, negative_shift)))
        builder.width_scale, _ = best_shift(np.asarray(totals)[:, None], scales)
        log.info(f"PSF width scale fitted: {builder.width_scale:.3f}")
        shift = refine(lambda trial: chi2(trial, negative_shift), shift, (fine,))
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


def extract_optimal(
    model, params: OptimalParameters, psf: PsfTable, slit_name: str
) -> OptimalProducts:
    """
    Optimal-extract an unrectified LRS exposure (all integrations at once).

    Parameters
    ----------
    model : DataModel
        Validated LRS cal or calints; never modified.
    params : OptimalParameters
        Resolved parameters.
    psf : PsfTable
        The PSF.
    slit_name : str
        Name written to the spectra.

    Returns
    -------
    OptimalProducts
        x1d model and diagnostics.
    """
    region = lrs_adapter.data_region(model, (params.disp_start, params.disp_stop))
    wavelength = lrs_adapter.region_wavelengths(model, region)
    trace, negative = _nominal_traces(model, region, wavelength, params)
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
            f"({psf.wave[0]:.2f}-{psf.wave[-1]:.2f} um) and are flagged"
        )
    keep = covered & np.isfinite(trace)

    pixels = lrs_adapter.read_pixels(model, region)
    n_int, n_rows, n_xdisp = pixels.data.shape
    variances = (pixels.var_rnoise, pixels.var_poisson, pixels.var_flat)
    total_var = sum(variances)
    valid = np.isfinite(pixels.data) & np.isfinite(total_var) & (total_var > 0)
    valid &= keep[None, :, None]
    if model.hasattr("dq") and model.dq is not None and model.dq.shape == model.data.shape:
        # Unlike box extraction (jwst parity), the fit also skips NON_SCIENCE
        # pixels: the profile and background must describe every pixel used.
        dq = np.asarray(model.dq).reshape(-1, *model.dq.shape[-2:])[(slice(None), *region.slices)]
        valid &= (dq & NON_SCIENCE) == 0
    n_bad_variance = int((np.isfinite(pixels.data) & ~(total_var > 0)).sum())
    if n_bad_variance:
        log.warning(f"{n_bad_variance} pixel(s) with zero or negative variance are not used")
    if not valid.any():
        raise InputDataError("no pixel with finite data and positive variance on the trace rows")

    builder = _SceneBuilder(psf, region, row_wavelength, trace, negative, params, n_xdisp)
    background_model = None
    flat = [a.reshape(-1, n_xdisp) for a in (pixels.data, *variances)]
    flat_valid = valid.reshape(-1, n_xdisp)
    science = flat[0]

    separate = builder.separate_background
    fit_pixels = flat_valid
    if params.background_regions is not None and params.subtract_background:
        background_weights = build_box_apertures(
            params.background_regions, model, region, wavelength
        ).background
        if background_weights is None or not (background_weights > 0).any():
            raise ParameterError("the extract1d bkg_coeff regions hold no pixel of the data")
        # The fit sees the PSF core and the extract1d background regions only.
        core = np.abs(sum(builder.profiles(np.zeros(n_rows))))
        near = core >= BACKGROUND_PROFILE_LEVEL * core.max(axis=1, keepdims=True)
        selected = near | (background_weights > 0)
        fit_pixels = flat_valid & np.tile(selected, (n_int, 1))
        valid = fit_pixels.reshape(valid.shape)

    # Trace location on the mean over integrations (higher SNR than one).
    shift = np.zeros(n_rows)
    negative_shift = None
    solution = None
    locate = (
        params.optimize_psf_location or params.fit_trace_order >= 0 or params.optimize_psf_width
    )
    if locate or n_int > 1:
        cube = science.reshape(n_int, n_rows, n_xdisp)
        count = valid.sum(axis=0)
        safe_count = np.maximum(count, 1)
        mean_data = np.sum(cube, axis=0, where=valid) / safe_count
        mean_vars = [np.sum(v, axis=0, where=valid) / safe_count**2 for v in variances]
        mean_valid = count > 0
    if locate:
        shift, negative_shift, solution = _location(
            builder, mean_data, mean_vars, mean_valid, params, negative is not None
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

    profiles = builder.profiles(shift, negative_shift)
    n_profiles = len(profiles)
    row_basis = builder.basis(profiles)

    def basis_for(rows, basis=row_basis):
        # Batches hold whole integrations: the cutout's row basis is shared.
        return basis

    series_variance = None
    if n_int > 1:
        # Time series: the variance model comes from the scene fitted to the
        # mean image (noise-free for practical purposes), the same for every
        # integration, so the weights are shared (fit_series).
        mean_fit = fit_rows(
            mean_data,
            *mean_vars,
            mean_valid,
            row_basis,
            n_profiles,
            reject_sigma=params.reject_sigma or None,
        )
        source_part = np.einsum(
            "np,npx->nx", mean_fit.coefficients[:, :n_profiles], row_basis[:, :n_profiles]
        )
        mean_signal = np.abs(np.nan_to_num(source_part)) + np.clip(
            np.nan_to_num(mean_fit.model - source_part), 0.0, None
        )
        # VAR_POISSON of one integration: the mean image's times the count.
        series_variance = poisson_variance_model(
            mean_vars[1] * np.maximum(count, 1), mean_signal, mean_valid, n_rows
        )

    if separate:
        joint = _fit_in_batches(
            basis_for, (science, *flat[1:]), fit_pixels, params, n_rows, n_profiles, series_variance
        )
        if isinstance(joint, SeriesFit):
            joint = joint.expand()
        background_model, bkg_covariances, bkg_ok = _smoothed_background(
            joint,
            n_profiles,
            (flat[1], joint.var_poisson_model, flat[3]),
            builder.background_basis,
            params.bkg_smoothing_length,
            n_int,
        )
        if not bkg_ok.any():
            raise ParameterError(
                f"no row has enough pixels for a background polynomial of order {params.bkg_order}"
            )
        science = science - background_model
        profile_basis = builder.basis(profiles, with_background=False)

        def basis_for(rows, basis=profile_basis):
            return basis

    fit = _fit_in_batches(
        basis_for, (science, *flat[1:]), fit_pixels, params, n_rows, n_profiles, series_variance
    )
    flux = fit.coefficients[:, 0]
    if separate and isinstance(fit, SeriesFit):
        fit = fit.expand()
    bkg_basis = builder.background_basis
    joint_background = not separate and bkg_basis.shape[0] > 0
    # NaN variances sit on unused pixels (zero weight); zero them (our copies).
    for component in (flat[1], flat[3]):
        np.nan_to_num(component, copy=False)
    if isinstance(fit, SeriesFit):
        # Shared rows: (R, X) weights against per-integration (B, R, X) arrays.
        cube = (n_int, n_rows, n_xdisp)
        statistics = _row_statistics(
            fit.operator[:, 0, :],
            fit.used,
            fit.variance,
            (flat[1].reshape(cube), fit.var_poisson_model, flat[3].reshape(cube)),
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
        n_rejected = int(fit.rejected.sum())
    var_terms, bkg_var_terms = statistics[0:3], statistics[3:6]
    npixels, background_level = statistics[6], statistics[7]
    if separate:
        # Background level and variance from the smoothed background instead.
        source_profile = np.tile(profiles[0], (n_int, 1))
        weights = fit.pixel_weights[:, 0, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            background_level = np.sum(source_profile * background_model, axis=1) / np.sum(
                source_profile, axis=1
            )
        background_level = np.nan_to_num(background_level)
        projector = np.einsum("nx,kx->nk", weights, bkg_basis)
        bkg_var_terms = [
            np.einsum("nk,nkl,nl->n", projector, cov, projector) for cov in bkg_covariances
        ]
        var_terms = [v + b for v, b in zip(var_terms, bkg_var_terms, strict=True)]

    if n_rejected:
        log.info(f"Rejected {n_rejected} outlier pixel(s) (reject_sigma={params.reject_sigma})")
        n_fitted = max(int(fit_pixels.sum()), 1)
        if n_rejected > REJECTED_FRACTION_WARNING * n_fitted:
            log.warning(
                f"{100 * n_rejected / n_fitted:.1f}% of the fitted pixels were rejected: the "
                "scene model does not describe the data (background gradient? try a higher "
                "bkg_order, optimize_psf_width, or a PSF file matching the data)"
            )
    failed = keep[None, :] & ~fit.ok.reshape(n_int, n_rows)
    if failed.any():
        log.warning(f"{int(failed.sum())} spectral element(s) could not be fitted; flagged")

    def per_integration(values):
        return values.reshape(n_int, n_rows)[:, keep]

    columns = SpectrumColumns(
        wavelength=row_wavelength[keep],
        flux=per_integration(flux),
        var_poisson=per_integration(var_terms[1]),
        var_rnoise=per_integration(var_terms[0]),
        var_flat=per_integration(var_terms[2]),
        background=per_integration(background_level * npixels),
        bkg_var_poisson=per_integration(bkg_var_terms[1]),
        bkg_var_rnoise=per_integration(bkg_var_terms[0]),
        bkg_var_flat=per_integration(bkg_var_terms[2]),
        npixels=per_integration(npixels),
        surface_brightness=False,
    )
    pixel_solid_angle = lrs_adapter.pixel_solid_angle(model)
    final_trace = trace + shift
    good_rows = np.flatnonzero(keep)
    centre_row = good_rows[good_rows.size // 2]
    ra, dec = lrs_adapter.sky_position(
        model, float(final_trace[centre_row]), float(region.disp_index[centre_row])
    )
    limits = (
        float(region.xdisp_index[0]),
        float(region.xdisp_index[-1]),
        int(region.disp_index[good_rows[0]]),
        int(region.disp_index[good_rows[-1]]),
    )
    time_series = model.data.ndim == 3
    first = first_integration(columns)
    if time_series:
        template = make_spec_model(first, pixel_solid_angle)
        describe_spectrum(template, model, ra, dec, limits, region.dispaxis, slit_name)
        spec = make_tso_spec_model(columns, pixel_solid_angle, None, template, model)
    else:
        spec = make_spec_model(first, pixel_solid_angle)
        describe_spectrum(spec, model, ra, dec, limits, region.dispaxis, slit_name)
    spec.extraction_type = "OPTIMAL"
    x1d = make_x1d_model(model, [spec], time_series=time_series)

    full_shape = model.data.shape[-2:]
    scene_cut = fit.model + background_model if separate else fit.model
    scene_cut = scene_cut.reshape(n_int, n_rows, n_xdisp)
    scene_cut[:, ~keep] = np.nan
    profile_full = np.zeros(full_shape)
    profile_full[region.slices] = sum(profiles)
    return OptimalProducts(
        x1d=x1d,
        profile=profile_full,
        trace=final_trace,
        rows=region.disp_index,
        shift=solution,
        n_rejected=n_rejected,
        scene_cutout=scene_cut,
        used_cutout=valid,
        data=model.data,
        slices=region.slices,
    )
