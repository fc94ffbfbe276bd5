"""Point-source position per spectral bin in the MRS field, by staged Gaussian fits.

For every spectral bin (all bins of a channel at once):

1. the slice holding the most signal (each pixel capped at the bin's
   fifth-brightest value, so that one cosmic ray cannot pick the slice);
2. a 1-D Gaussian plus constant along that slice in alpha, and a 1-D
   Gaussian plus constant across slices in beta through each slice's pixel
   nearest the along-slice centre;
3. a 2-D Gaussian plus constant (elliptical, optionally rotated) fitted to
   all of the bin's valid pixels in (alpha, beta), started from stage 2,
   inverse-variance weighted, refitted once after rejecting outlying pixels.

The Gaussians are integrated over each pixel's footprint (error functions
over the along-slice edges and the slice width), so the slice sampling does
not bias the position. Every bin gets a status; a polynomial track
``alpha(lambda)``, ``beta(lambda)`` is fitted to the good bins with
iterative clipping, and bins far from it are marked outliers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from mirispec_steps.core.batched_fit import (
    BatchedFit,
    batched_least_squares,
    numerical_jacobian,
)
from mirispec_steps.core.robust import (
    clipped_polyfit,
    robust_sigma,
    row_quantile,
)
from mirispec_steps.mrs.core.spectral_grid import SpectralGrid, bin_members

__all__ = [
    "STATUS_FAILED",
    "STATUS_LOW_SIGNAL",
    "STATUS_OK",
    "STATUS_OUTLIER",
    "CentroidPixels",
    "CentroidSettings",
    "ChannelCentroid",
    "fit_centroids",
    "smooth_track",
]

STATUS_OK = "ok"
STATUS_LOW_SIGNAL = "low_signal"
STATUS_FAILED = "failed"
STATUS_OUTLIER = "outlier"

SQRT_2PI = np.sqrt(2.0 * np.pi)
#: Share of the fitted peak allowed as Gaussian-versus-PSF mismatch in the wings.
WING_TOLERANCE = 0.05
#: Half-size of the stage-3 pixel window around the source, in expected PSF sigmas.
WINDOW_SIGMAS = 6.5
#: Beyond this many sigmas a Gaussian holds less than 3e-7 of its integral (``ndtr(-5)``).
TAIL_SIGMAS = 5.0
_FAR_AWAY = 1.0e6
#: Stage 2 only starts stage 3: a chi-square decrease of 0.5 moves a parameter
#: by well under its error, so its fits stop there.
STAGE2_TOLERANCE = 0.5


@dataclass
class CentroidPixels:
    """
    One channel's pixels, as the centroid fits need them.

    Attributes
    ----------
    alpha_low, alpha_high : ndarray
        ``(N,)`` along-slice pixel edges (arcsec).
    beta : ndarray
        ``(N,)`` beta of the pixel's slice centre (arcsec).
    slice_number : ndarray
        ``(N,)`` slice, 1 to ``n_slices``.
    wavelength : ndarray
        ``(N,)`` micron.
    data, variance : ndarray
        ``(N,)`` surface brightness and its variance.
    valid : ndarray
        ``(N,)`` usable pixels (finite, variance > 0, not DO_NOT_USE).
    slice_beta : ndarray
        ``(n_slices,)`` slice centres.
    slice_width : float
        Slice width (arcsec).
    """

    alpha_low: np.ndarray
    alpha_high: np.ndarray
    beta: np.ndarray
    slice_number: np.ndarray
    wavelength: np.ndarray
    data: np.ndarray
    variance: np.ndarray
    valid: np.ndarray
    slice_beta: np.ndarray
    slice_width: float

    @property
    def alpha(self) -> np.ndarray:
        """Pixel centres along the slice."""
        return 0.5 * (self.alpha_low + self.alpha_high)


@dataclass
class CentroidSettings:
    """
    Choices of the staged fit.

    Attributes
    ----------
    rotation : bool
        Fit a rotated ellipse in stage 3.
    min_snr : float
        Bins whose amplitude has a lower signal-to-noise are ``low_signal``.
    reject_sigma : float
        Pixels beyond this many (robustly scaled) sigma of the stage-3 fit,
        plus ``model_tolerance`` times the fitted source signal at the
        pixel, are rejected before the refit.
    model_tolerance : float
        Fraction of the fitted source signal allowed as model error.
    track_order : int
        Polynomial order of the smooth track in wavelength.
    clip_sigma : float
        Bins further than this from the track (in their errors, robustly
        scaled) are outliers.
    """

    rotation: bool = False
    min_snr: float = 3.0
    reject_sigma: float = 5.0
    model_tolerance: float = 0.5
    track_order: int = 2
    clip_sigma: float = 4.0


@dataclass
class ChannelCentroid:
    """
    The centroid solution of one channel: per-bin fits, track and final position.

    Attributes
    ----------
    wavelength, bin_width : ndarray
        ``(K,)`` bin centres and widths (micron).
    amplitude : ndarray
        Fitted peak surface brightness of the Gaussian.
    alpha, beta : ndarray
        Fitted position (arcsec).
    sigma_alpha, sigma_beta : ndarray
        Fitted Gaussian widths (arcsec).
    alpha_err, beta_err : ndarray
        1-sigma position uncertainties.
    theta : ndarray
        Ellipse rotation (radians, 0 without rotation).
    background : ndarray
        Fitted constant.
    n_pixels : ndarray
        Pixels used in stage 3.
    status : ndarray
        ``ok``, ``low_signal``, ``failed`` or ``outlier``.
    alpha_smooth, beta_smooth : ndarray
        Smooth track at each bin.
    alpha_final, beta_final : float
        Weighted mean position of the good bins.
    alpha_final_err, beta_final_err : float
        Its uncertainty (scaled up by the scatter about the mean).
    """

    wavelength: np.ndarray
    bin_width: np.ndarray
    amplitude: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    sigma_alpha: np.ndarray
    sigma_beta: np.ndarray
    alpha_err: np.ndarray
    beta_err: np.ndarray
    theta: np.ndarray
    background: np.ndarray
    n_pixels: np.ndarray
    status: np.ndarray
    alpha_smooth: np.ndarray
    beta_smooth: np.ndarray
    alpha_final: float
    beta_final: float
    alpha_final_err: float
    beta_final_err: float

    @property
    def ok(self) -> np.ndarray:
        """Bins with a good fit."""
        return self.status == STATUS_OK


def _box_gaussian(low, high, centre, log_sigma, jacobian):
    """
    Mean of ``exp(-(x - centre)^2 / 2 sigma^2)`` over ``[low, high]``, and its derivatives.

    Returns the value, or the value and its derivatives with respect to
    ``centre`` and ``log sigma``.
    """
    # Evaluated for every pixel near the source at every iteration: no tail
    # mirroring (see gaussian_interval) and as few passes over the arrays as possible.
    sigma = np.exp(log_sigma)
    upper = high - centre
    upper /= sigma
    lower = low - centre
    lower /= sigma
    scale = sigma / (high - low)
    value = ndtr(upper)
    value -= ndtr(lower)
    value *= scale
    value *= SQRT_2PI
    if not jacobian:
        return value
    # exp(-z^2 / 2) at both edges; the 1 / sqrt(2 pi) of the density cancels.
    edge_upper = np.square(upper)
    edge_upper *= -0.5
    np.exp(edge_upper, out=edge_upper)
    edge_lower = np.square(lower)
    edge_lower *= -0.5
    np.exp(edge_lower, out=edge_lower)
    d_centre = edge_lower - edge_upper
    d_centre *= scale
    d_centre /= sigma
    upper *= edge_upper
    lower *= edge_lower
    upper -= lower
    upper *= scale
    d_log_sigma = np.subtract(value, upper, out=upper)
    return value, d_centre, d_log_sigma


def _gaussian_1d(low, high):
    """``evaluate`` for a footprint-averaged 1-D Gaussian plus constant ``(A, mu, log s, C)``."""

    def evaluate(params, rows, jacobian=False):
        amplitude, centre, log_sigma, constant = (params[:, i : i + 1] for i in range(4))
        result = _box_gaussian(low[rows], high[rows], centre, log_sigma, jacobian)
        if not jacobian:
            return amplitude * result + constant
        value, d_centre, d_log_sigma = result
        derivatives = np.stack(
            [value, amplitude * d_centre, amplitude * d_log_sigma, np.ones_like(value)], axis=-1
        )
        return amplitude * value + constant, derivatives

    return evaluate


def _gaussian_2d(alpha_low, alpha_high, slice_index, slice_beta, slice_width):
    """``evaluate`` for an axis-aligned footprint-averaged 2-D Gaussian plus constant.

    Parameters ``(A, alpha0, beta0, log sigma_alpha, log sigma_beta, C)``. The
    across-slice factor depends only on the slice, so it is computed per
    slice and gathered (``slice_index`` is the 0-based slice of each point).
    """
    half = 0.5 * slice_width
    beta_low, beta_high = slice_beta[None, :] - half, slice_beta[None, :] + half

    def evaluate(params, rows, jacobian=False):
        amplitude, a0, b0, log_sa, log_sb, constant = (params[:, i : i + 1] for i in range(6))
        along = _box_gaussian(alpha_low[rows], alpha_high[rows], a0, log_sa, jacobian)
        per_slice = _box_gaussian(beta_low, beta_high, b0, log_sb, jacobian)
        points = slice_index[rows]
        if not jacobian:
            return amplitude * along * np.take_along_axis(per_slice, points, axis=1) + constant
        va, da, dsa = along
        vb, db, dsb = (np.take_along_axis(part, points, axis=1) for part in per_slice)
        product = va * vb
        derivatives = np.stack(
            [
                product,
                amplitude * da * vb,
                amplitude * va * db,
                amplitude * dsa * vb,
                amplitude * va * dsb,
                np.ones_like(product),
            ],
            axis=-1,
        )
        return amplitude * product + constant, derivatives

    return evaluate


def _gaussian_2d_rotated(params, alpha, alpha_width, beta, slice_width):
    """Rotated 2-D Gaussian plus constant, pixel footprint as added box variance.

    Parameters ``(A, alpha0, beta0, log sigma_alpha, log sigma_beta, theta, C)``;
    the arrays are those of the rows being evaluated.
    """
    amplitude, a0, b0, log_sa, log_sb, theta, constant = (params[:, i : i + 1] for i in range(7))
    sa2, sb2 = np.exp(2 * log_sa), np.exp(2 * log_sb)
    cos, sin = np.cos(theta), np.sin(theta)
    c_aa = sa2 * cos**2 + sb2 * sin**2 + alpha_width**2 / 12.0
    c_bb = sa2 * sin**2 + sb2 * cos**2 + slice_width**2 / 12.0
    c_ab = (sa2 - sb2) * cos * sin
    determinant = c_aa * c_bb - c_ab**2
    da, db = alpha - a0, beta - b0
    exponent = (c_bb * da**2 - 2 * c_ab * da * db + c_aa * db**2) / determinant
    peak = amplitude * np.sqrt(sa2 * sb2 / determinant)
    return peak * np.exp(-0.5 * exponent) + constant


class _Stage3:
    """
    The stage-3 2-D Gaussian fits of many bins, on pixels near the source.

    The fit uses every valid pixel of a bin, but only the pixels within
    ``half_window`` of the source position (a box in alpha and across
    slices) are evaluated pixel by pixel. Beyond, the Gaussian is zero to
    within ``ndtr(-TAIL_SIGMAS)`` of its peak, so those pixels' model is the
    constant alone and their chi-square is a function of three sums (weights,
    weighted data, weighted squares): they enter the fit as one point with
    the weighted mean value and the summed weight, and the chi-square and
    degrees of freedom are corrected afterwards. Bins whose fitted Gaussian
    reaches outside its window are fitted again in a window twice as large
    around the fitted position, and if that is not enough, on all pixels.
    """

    def __init__(
        self, alpha_low, alpha_high, slice_index, data, slice_beta, slice_width, rotation, scale
    ):
        self.alpha_low, self.alpha_high = alpha_low, alpha_high
        self.slice_index, self.data = slice_index, data
        self.slice_beta, self.slice_width = slice_beta, slice_width
        self.rotation, self.scale = rotation, scale

    def model(self, alpha_low, alpha_high, slice_index) -> Callable:
        """``evaluate(params, rows, jacobian)`` on these ``(R, M)`` pixel footprints."""
        if not self.rotation:
            return _gaussian_2d(
                alpha_low, alpha_high, slice_index, self.slice_beta, self.slice_width
            )
        alpha, alpha_width = 0.5 * (alpha_low + alpha_high), alpha_high - alpha_low
        beta = self.slice_beta[slice_index]

        def rotated(params, rows):
            return _gaussian_2d_rotated(
                params, alpha[rows], alpha_width[rows], beta[rows], self.slice_width
            )

        steps = np.array([1e-6 * self.scale, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-6 * self.scale])
        return numerical_jacobian(rotated, steps)

    def fit(
        self,
        bins: np.ndarray,
        initial: np.ndarray,
        weight: np.ndarray,
        centre: np.ndarray,
        half_window: np.ndarray,
        attempt: int = 0,
    ) -> tuple[BatchedFit, np.ndarray]:
        """
        Fit bins ``bins`` from ``initial`` with these ``(len(bins), M)`` weights.

        ``attempt`` 0 uses ``half_window`` around ``centre``, 1 the larger
        window of a retry, 2 every pixel. Returns the fit and the fitted
        model at every pixel of those bins.
        """
        low, high = self.alpha_low[bins], self.alpha_high[bins]
        slice_index, data = self.slice_index[bins], self.data[bins]
        half = half_window[:, None]
        near = weight > 0
        if attempt < 2:
            near &= (
                (high >= centre[:, :1] - half)
                & (low <= centre[:, :1] + half)
                & (
                    np.abs(self.slice_beta[slice_index] - centre[:, 1:])
                    <= half + self.slice_width / 2
                )
            )
        far = (weight > 0) & ~near
        far_weight = np.sum(np.where(far, weight, 0.0), axis=1)
        far_sum = np.sum(np.where(far, weight * data, 0.0), axis=1)
        far_squares = np.sum(np.where(far, weight * data * data, 0.0), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            far_mean = np.where(far_weight > 0, far_sum / far_weight, 0.0)
        width = max(int(near.sum(axis=1).max()), 1)
        compact = np.argsort(~near, axis=1, kind="stable")[:, :width]
        inside = np.take_along_axis(near, compact, axis=1)

        def gather(values, fill, summary):
            window = np.where(inside, np.take_along_axis(values, compact, axis=1), fill)
            return np.concatenate([window, np.broadcast_to(summary, (len(bins), 1))], axis=1)

        # The summary point sits far outside the field: its Gaussian is exactly 0.
        evaluate = self.model(
            gather(low, _FAR_AWAY, _FAR_AWAY),
            gather(high, _FAR_AWAY + 1.0, _FAR_AWAY + 1.0),
            gather(slice_index, 0, 0),
        )
        fit = batched_least_squares(
            evaluate,
            initial,
            gather(data, 0.0, far_mean[:, None]),
            gather(weight, 0.0, far_weight[:, None]),
            max_iterations=50,
        )
        fit.chi2 += far_squares - far_mean * far_sum
        fit.dof += np.maximum(np.count_nonzero(far, axis=1) - 1, 0)
        fitted = np.repeat(fit.params[:, -1:], low.shape[1], axis=1)
        # A bin without a source can end with a zero or infinite width: its model
        # is not finite, and _finish marks the bin failed.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            values = evaluate(fit.params, np.arange(len(bins)))[:, :-1]
        np.put_along_axis(fitted, compact, np.where(inside, values, fitted[:, :width]), axis=1)

        with np.errstate(over="ignore"):
            widest = np.exp(np.max(fit.params[:, 3:5], axis=1))
        margin = half_window - TAIL_SIGMAS * widest
        contained = (np.abs(fit.params[:, 1] - centre[:, 0]) <= margin) & (
            np.abs(fit.params[:, 2] - centre[:, 1]) <= margin
        )
        spill = np.flatnonzero(~contained & np.any(far, axis=1))
        if spill.size:
            fitted_centre = fit.params[spill, 1:3]
            refit, refitted = self.fit(
                bins[spill],
                initial[spill],
                weight[spill],
                np.where(np.isfinite(fitted_centre), fitted_centre, centre[spill]),
                2.0 * half_window[spill],
                attempt + 1,
            )
            fit.replace_rows(spill, refit)
            fitted[spill] = refitted
        return fit, fitted


@dataclass
class _Bins:
    """A channel's pixels gathered per bin: ``(K, M)`` arrays, zero weight where padded."""

    valid: np.ndarray
    data: np.ndarray
    weight: np.ndarray
    alpha_low: np.ndarray
    alpha_high: np.ndarray
    slices: np.ndarray

    @classmethod
    def gather(cls, pixels: CentroidPixels, grid: SpectralGrid) -> _Bins:
        members = bin_members(pixels.wavelength, grid)
        index = members.index
        valid = members.inside & pixels.valid[index]
        with np.errstate(divide="ignore"):
            weight = np.where(valid, 1.0 / pixels.variance[index], 0.0)
        return cls(
            valid,
            np.where(valid, pixels.data[index], 0.0),
            weight,
            pixels.alpha_low[index],
            pixels.alpha_high[index],
            pixels.slice_number[index],
        )

    @property
    def alpha(self) -> np.ndarray:
        return 0.5 * (self.alpha_low + self.alpha_high)

    @property
    def n_bins(self) -> int:
        return self.data.shape[0]


def _capped_best_slice(bins: _Bins, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: data capped at each bin's 5th-brightest value, and the slice with most signal."""
    ranked = np.where(bins.valid, bins.data, -np.inf)
    fifth = min(5, ranked.shape[1])
    cap = -np.partition(-ranked, fifth - 1, axis=1)[:, fifth - 1 : fifth]
    capped = np.where(bins.valid, np.minimum(bins.data, np.where(np.isfinite(cap), cap, 0.0)), 0.0)
    rows = np.broadcast_to(np.arange(bins.n_bins)[:, None], bins.slices.shape)
    per_slice = np.bincount(
        (rows * n_slices + bins.slices - 1)[bins.valid],
        weights=capped[bins.valid],
        minlength=bins.n_bins * n_slices,
    ).reshape(bins.n_bins, n_slices)
    return capped, np.argmax(per_slice, axis=1) + 1


def _along_slice(bins: _Bins, capped, best_slice, sigma0):
    """Stage 2a: a 1-D Gaussian along the best slice: the fit, the alpha start, the peak height."""
    n_bins = bins.n_bins
    on_best = bins.valid & (bins.slices == best_slice[:, None])
    floor = np.nan_to_num(row_quantile(capped, on_best, 0.1))
    peak_at = np.nanargmax(np.where(on_best, capped, -np.inf), axis=1)
    start = np.column_stack(
        [
            np.maximum(np.nanmax(np.where(on_best, capped, -np.inf), axis=1) - floor, 1e-30),
            bins.alpha[np.arange(n_bins), peak_at],
            np.log(sigma0),
            floor,
        ]
    )
    start = np.where(np.isfinite(start), start, 0.0)
    # Compact the best slice's pixels to the left so that the fit works on few columns.
    width = max(int(on_best.sum(axis=1).max()), 1)
    compact = np.argsort(~on_best, axis=1, kind="stable")[:, :width]

    def take(values):
        return np.take_along_axis(values, compact, axis=1)

    along = batched_least_squares(
        _gaussian_1d(take(bins.alpha_low), take(bins.alpha_high)),
        start,
        take(capped),
        take(np.where(on_best, bins.weight, 0.0)),
        max_iterations=15,
        tolerance=STAGE2_TOLERANCE,
    )
    found = np.isfinite(along.params[:, 1]) & (
        np.abs(along.params[:, 1] - start[:, 1]) < 3 * sigma0
    )
    return along, np.where(found, along.params[:, 1], start[:, 1]), start[:, 0]


def _across_slices(
    bins: _Bins, capped, alpha_start, pixels: CentroidPixels, sigma0
) -> tuple[BatchedFit, np.ndarray]:
    """Stage 2b: a 1-D Gaussian across slices through each slice's pixel nearest alpha_start."""
    n_bins, n_slices = bins.n_bins, pixels.slice_beta.size
    distance = np.where(bins.valid, np.abs(bins.alpha - alpha_start[:, None]), np.inf)
    values = np.zeros((n_bins, n_slices))
    weights = np.zeros((n_bins, n_slices))
    every_bin = np.arange(n_bins)
    for number in range(1, n_slices + 1):
        in_slice = np.where(bins.slices == number, distance, np.inf)
        nearest = np.argmin(in_slice, axis=1)
        found = np.isfinite(in_slice[every_bin, nearest])
        values[:, number - 1] = np.where(found, capped[every_bin, nearest], 0.0)
        weights[:, number - 1] = np.where(found, bins.weight[every_bin, nearest], 0.0)
    slice_low = np.broadcast_to(pixels.slice_beta - 0.5 * pixels.slice_width, (n_bins, n_slices))
    slice_high = slice_low + pixels.slice_width
    lowest = np.where((weights > 0) & ~np.isnan(values), values, np.inf).min(axis=1)
    floor = np.where(np.isfinite(lowest), lowest, 0.0)  # a bin without a value starts at 0
    peak = np.nanargmax(np.where(weights > 0, values, -np.inf), axis=1)
    start = np.column_stack(
        [
            np.maximum(values[every_bin, peak] - floor, 1e-30),
            pixels.slice_beta[peak],
            np.log(np.maximum(sigma0, 0.5 * pixels.slice_width)),
            floor,
        ]
    )
    across = batched_least_squares(
        _gaussian_1d(slice_low, slice_high),
        start,
        values,
        weights,
        max_iterations=15,
        tolerance=STAGE2_TOLERANCE,
    )
    found = np.isfinite(across.params[:, 1]) & (
        np.abs(across.params[:, 1] - start[:, 1]) < 2 * pixels.slice_width
    )
    return across, np.where(found, across.params[:, 1], start[:, 1])


def _stage3_start(bins, along, across, positions, peak, sigma0, rotation) -> np.ndarray:
    """Starting parameters of the 2-D fit from the stage-2 fits, widths kept plausible."""
    amplitude = np.maximum(np.nan_to_num(across.params[:, 0]), np.nan_to_num(along.params[:, 0]))
    amplitude = np.where(amplitude > 0, amplitude, peak)
    limits = (np.log(0.5 * sigma0), np.log(2 * sigma0))
    log_widths = [
        np.clip(np.where(np.isfinite(fit.params[:, 2]), fit.params[:, 2], np.log(sigma0)), *limits)
        for fit in (along, across)
    ]
    constant = np.nan_to_num(row_quantile(bins.data, bins.valid, 0.5))
    columns = [amplitude, *positions, *log_widths]
    if rotation:
        columns.append(np.zeros(bins.n_bins))
    columns.append(constant)
    return np.column_stack(columns)


def _reject_and_refit(bins, stage3, fit, fitted, settings, half_window, passes=2):
    """Up to ``passes`` rejections of outlying pixels, each refit starting from the last solution.

    Single-pixel spikes were removed before; what is left here is milder.
    Returns the weights of the pixels kept.
    """
    fit_weight = bins.weight
    sigma = np.sqrt(np.where(bins.valid, 1.0 / np.where(bins.weight > 0, bins.weight, 1.0), 0.0))
    for _ in range(passes if settings.reject_sigma > 0 else 0):
        normalised = (bins.data - fitted) * np.sqrt(fit_weight)
        spread = np.nan_to_num(np.maximum(robust_sigma(normalised, fit_weight > 0), 1.0), nan=1.0)
        # A Gaussian misses the real PSF's core and wings by a fraction of the signal:
        # that much is model error, not an outlier (a cosmic ray is far above it).
        source_part = np.abs(fitted - fit.params[:, -1:])
        wing_level = WING_TOLERANCE * np.abs(fit.params[:, :1])
        tolerance = (
            settings.reject_sigma * spread[:, None] * sigma
            + settings.model_tolerance * source_part
            + wing_level
        )
        keep = (fit_weight > 0) & (np.abs(bins.data - fitted) <= tolerance)
        rejected_any = np.any((fit_weight > 0) & ~keep, axis=1)
        if not np.any(rejected_any):
            break
        fit_weight = np.where(keep, bins.weight, 0.0)
        subset = np.flatnonzero(rejected_any)
        refit, refitted = stage3.fit(
            subset,
            fit.params[subset],
            fit_weight[subset],
            fit.params[subset, 1:3],
            half_window[subset],
        )
        fit.replace_rows(subset, refit)
        fitted[subset] = refitted
    return fit_weight


def fit_centroids(
    pixels: CentroidPixels,
    grid: SpectralGrid,
    expected_sigma: np.ndarray,
    settings: CentroidSettings | None = None,
) -> ChannelCentroid:
    """
    Fit the source position in every bin of a channel and the smooth track.

    Parameters
    ----------
    pixels : CentroidPixels
        The channel's pixels.
    grid : SpectralGrid
        Spectral bins.
    expected_sigma : ndarray
        ``(K,)`` PSF core standard deviation along the slice in each bin
        (arcsec), from the PSF model: start values, the stage-3 window and
        the sanity range of fitted widths.
    settings : CentroidSettings or None
        Fit choices (defaults if None).

    Returns
    -------
    ChannelCentroid
        Per-bin results, statuses, track and final position.
    """
    settings = settings or CentroidSettings()
    sigma0 = np.asarray(expected_sigma, dtype=float)
    bins = _Bins.gather(pixels, grid)
    capped, best_slice = _capped_best_slice(bins, pixels.slice_beta.size)
    along, alpha_start, peak = _along_slice(bins, capped, best_slice, sigma0)
    across, beta_start = _across_slices(bins, capped, alpha_start, pixels, sigma0)
    initial = _stage3_start(
        bins, along, across, (alpha_start, beta_start), peak, sigma0, settings.rotation
    )
    stage3 = _Stage3(
        bins.alpha_low,
        bins.alpha_high,
        bins.slices - 1,
        bins.data,
        pixels.slice_beta,
        pixels.slice_width,
        settings.rotation,
        max(float(np.max(np.abs(bins.data))), 1e-12),
    )
    half_window = WINDOW_SIGMAS * sigma0
    fit, fitted = stage3.fit(
        np.arange(bins.n_bins), initial, bins.weight, initial[:, 1:3], half_window
    )
    fit_weight = _reject_and_refit(bins, stage3, fit, fitted, settings, half_window)
    has_data = bins.valid.sum(axis=1) >= 8
    return _finish(fit, grid, pixels, settings, has_data, fit_weight, sigma0)


def _finish(fit, grid, pixels, settings, has_data, fit_weight, sigma0) -> ChannelCentroid:
    params = fit.params
    rotated = settings.rotation
    constant = params[:, -1]
    reduced = np.where(fit.dof > 0, fit.chi2 / np.maximum(fit.dof, 1), np.nan)
    inflation = np.sqrt(np.maximum(np.nan_to_num(reduced, nan=1.0), 1.0))
    errors = fit.errors * inflation[:, None]
    amplitude = params[:, 0]
    alpha, beta = params[:, 1], params[:, 2]
    sigma_alpha, sigma_beta = np.exp(params[:, 3]), np.exp(params[:, 4])
    theta = params[:, 5] if rotated else np.zeros(len(grid))
    alpha_err, beta_err = errors[:, 1], errors[:, 2]
    amplitude_err = errors[:, 0]

    alpha_extent = max(np.max(np.abs(pixels.alpha_low)), np.max(np.abs(pixels.alpha_high)))
    beta_low = pixels.slice_beta[0] - pixels.slice_width
    beta_high = pixels.slice_beta[-1] + pixels.slice_width
    finite = np.all(np.isfinite(params), axis=1) & np.isfinite(alpha_err) & np.isfinite(beta_err)
    sane = (
        finite
        & fit.finished
        & (amplitude > 0)
        & (np.abs(alpha) <= alpha_extent)
        & (beta >= beta_low)
        & (beta <= beta_high)
        & (sigma_alpha > 0.3 * sigma0)
        & (sigma_alpha < 3.0 * sigma0)
        & (sigma_beta > 0.3 * sigma0)
        & (sigma_beta < 3.0 * sigma0)
        & (alpha_err > 0)
        & (beta_err > 0)
        & has_data
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = amplitude / amplitude_err
    status = np.full(len(grid), STATUS_FAILED, dtype="<U10")
    status[sane] = STATUS_OK
    status[sane & ~(snr >= settings.min_snr)] = STATUS_LOW_SIGNAL

    alpha_smooth, alpha_outlier = smooth_track(
        grid.wavelength, alpha, alpha_err, status == STATUS_OK, settings
    )
    beta_smooth, beta_outlier = smooth_track(
        grid.wavelength, beta, beta_err, status == STATUS_OK, settings
    )
    status[(status == STATUS_OK) & (alpha_outlier | beta_outlier)] = STATUS_OUTLIER
    good = status == STATUS_OK
    alpha_final, alpha_final_err = _weighted_mean(alpha, alpha_err, good)
    beta_final, beta_final_err = _weighted_mean(beta, beta_err, good)
    nan_where_failed = np.where(status == STATUS_FAILED, np.nan, 1.0)
    return ChannelCentroid(
        wavelength=grid.wavelength,
        bin_width=grid.width,
        amplitude=amplitude * nan_where_failed,
        alpha=alpha * nan_where_failed,
        beta=beta * nan_where_failed,
        sigma_alpha=sigma_alpha * nan_where_failed,
        sigma_beta=sigma_beta * nan_where_failed,
        alpha_err=alpha_err * nan_where_failed,
        beta_err=beta_err * nan_where_failed,
        theta=theta * nan_where_failed,
        background=constant * nan_where_failed,
        n_pixels=np.sum(fit_weight > 0, axis=1),
        status=status,
        alpha_smooth=alpha_smooth,
        beta_smooth=beta_smooth,
        alpha_final=alpha_final,
        beta_final=beta_final,
        alpha_final_err=alpha_final_err,
        beta_final_err=beta_final_err,
    )


def _weighted_mean(values, errors, good) -> tuple[float, float]:
    if not np.any(good):
        return float("nan"), float("nan")
    weight = 1.0 / errors[good] ** 2
    mean = float(np.sum(weight * values[good]) / np.sum(weight))
    error = float(1.0 / np.sqrt(np.sum(weight)))
    if np.count_nonzero(good) > 1:
        reduced = np.sum(weight * (values[good] - mean) ** 2) / (np.count_nonzero(good) - 1)
        error *= float(np.sqrt(max(reduced, 1.0)))
    return mean, error


def smooth_track(
    wavelength: np.ndarray,
    position: np.ndarray,
    error: np.ndarray,
    usable: np.ndarray,
    settings: CentroidSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Outlier-resistant polynomial ``position(lambda)`` through the usable bins.

    Parameters
    ----------
    wavelength, position, error : ndarray
        ``(K,)`` per-bin values.
    usable : ndarray
        ``(K,)`` bins allowed in the fit.
    settings : CentroidSettings or None
        ``track_order`` and ``clip_sigma``.

    Returns
    -------
    track : ndarray
        ``(K,)`` the polynomial at every bin (NaN if no bin is usable).
    outlier : ndarray
        ``(K,)`` usable bins rejected by the clipping.

    Notes
    -----
    :func:`~mirispec_steps.core.robust.clipped_polyfit` in the wavelength
    scaled to [-1, 1].
    """
    settings = settings or CentroidSettings()
    centre = 0.5 * (wavelength.min() + wavelength.max())
    half = max(0.5 * (wavelength.max() - wavelength.min()), 1e-12)
    x = (wavelength - centre) / half
    usable = usable & np.isfinite(position) & np.isfinite(error) & (error > 0)
    fit = clipped_polyfit(
        x, position, error, settings.track_order, settings.clip_sigma, usable=usable
    )
    return fit(x), usable & ~fit.inliers
