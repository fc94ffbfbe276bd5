"""Background estimation under a box aperture (pure NumPy).

Arrays are dispersion-major ``(n_disp, n_xdisp)``. The background is fitted
row by row (one dispersion element at a time) to the pixels of the
background regions, evaluated under the source aperture, and its variance
is propagated exactly to the aperture sum through the linear weights of the
fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BackgroundFit", "smooth_along_dispersion", "fit_background"]

#: jwst inflates the variance of a median by this factor (it is ~1.2x the mean's error).
MEDIAN_ERROR_FACTOR = 1.2


@dataclass
class BackgroundFit:
    """
    A fitted background and its variance under the aperture.

    Attributes
    ----------
    model : ndarray
        Background per pixel, ``(n_disp, n_xdisp)``.
    var_rnoise, var_poisson, var_flat : ndarray
        Variance of the background summed under the aperture, per dispersion
        element, split by noise source, ``(n_disp,)``.
    n_used : ndarray
        Background pixels used per dispersion element (after clipping).
    singular : ndarray of bool
        Dispersion elements where the fit was impossible (background set to 0).
    """

    model: np.ndarray
    var_rnoise: np.ndarray
    var_poisson: np.ndarray
    var_flat: np.ndarray
    n_used: np.ndarray
    singular: np.ndarray


def smooth_along_dispersion(image: np.ndarray, length: int) -> np.ndarray:
    """
    Boxcar-smooth each column along the dispersion axis, interpolating NaNs.

    Parameters
    ----------
    image : ndarray
        Image ``(..., n_disp, n_xdisp)``; NaNs are ignored in the averages.
    length : int
        Odd boxcar length in pixels; 0 or 1 returns a copy.

    Returns
    -------
    ndarray
        The smoothed image.

    Notes
    -----
    Same result as jwst's ``astropy.convolution.convolve`` call with a
    ``(length, 1)`` uniform kernel, ``boundary="extend"`` and NaN
    interpolation: each output is the mean of the finite values in the
    window, the image being extended with its edge rows. Computed with
    cumulative sums, in O(n) per column.
    """
    if length <= 1:
        return image.copy()
    half = length // 2
    first, last = image[..., :1, :], image[..., -1:, :]
    padded = np.concatenate(
        [np.repeat(first, half, axis=-2), image, np.repeat(last, half, axis=-2)], axis=-2
    )
    finite = np.isfinite(padded)
    values = np.where(finite, padded, 0.0)
    zeros = np.zeros((*image.shape[:-2], 1, image.shape[-1]))
    value_sum = np.concatenate([zeros, np.cumsum(values, axis=-2)], axis=-2)
    count_sum = np.concatenate([zeros, np.cumsum(finite, axis=-2, dtype=float)], axis=-2)
    window_sum = value_sum[..., length:, :] - value_sum[..., :-length, :]
    window_count = count_sum[..., length:, :] - count_sum[..., :-length, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return window_sum / window_count


def _normalised_coordinate(n_xdisp: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n_xdisp)


def _poly_fit(
    image: np.ndarray,
    use: np.ndarray,
    aperture: np.ndarray,
    order: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise weighted polynomial fit; returns model, aperture pixel weights, singular."""
    n_disp, n_xdisp = image.shape
    design = np.vander(_normalised_coordinate(n_xdisp), order + 1, increasing=True)
    weight = use.astype(float)
    normal = np.einsum("rj,jk,jl->rkl", weight, design, design)
    with np.errstate(invalid="ignore", divide="ignore"):
        condition = np.linalg.cond(normal)
    singular = ~(condition < 1e10)
    safe_normal = np.where(singular[:, None, None], np.eye(order + 1), normal)
    target = np.where(use, image, 0.0)
    rhs = np.einsum("rj,jk->rk", target, design)
    coefficients = np.linalg.solve(safe_normal, rhs[..., np.newaxis])[..., 0]
    coefficients[singular] = 0.0
    model = coefficients @ design.T
    # The background summed under the aperture is a linear combination of the
    # background pixels: sum_j pixel_weight_rj * data_rj. Its variance follows.
    aperture_design = aperture @ design
    projection = np.linalg.solve(safe_normal, aperture_design[..., np.newaxis])[..., 0]
    pixel_weight = (projection @ design.T) * weight
    pixel_weight[singular] = 0.0
    return model, pixel_weight, singular


def _robust_clip_mask(
    residual: np.ndarray, sigma: np.ndarray, use: np.ndarray, threshold: float
) -> np.ndarray:
    """Pixels of ``use`` whose residual is within ``threshold`` sigma."""
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.abs(residual) / sigma
    return use & ~(normalised > threshold)


def fit_background(
    image: np.ndarray,
    var_rnoise: np.ndarray,
    var_poisson: np.ndarray,
    var_flat: np.ndarray,
    background_region: np.ndarray,
    aperture: np.ndarray,
    method: str = "poly",
    order: int = 0,
    smoothing_length: int = 0,
    sigma_clip: float | None = None,
    max_clip_iterations: int = 5,
    margin: tuple[int, int] = (0, 0),
) -> BackgroundFit:
    """
    Fit the background of every dispersion element and propagate its variance.

    Parameters
    ----------
    image : ndarray
        Data ``(n_disp, n_xdisp)``, or a stack ``(n_int, n_disp, n_xdisp)``
        of integrations fitted all at once; NaN where invalid.
    var_rnoise, var_poisson, var_flat : ndarray
        Variance components of ``image``.
    background_region : ndarray
        Background region weights ``(n_disp, n_xdisp)``; every pixel with a
        non-zero weight is used with full weight (as in jwst).
    aperture : ndarray
        Source aperture weights ``(n_disp, n_xdisp)``, used to sum the
        background variance.
    method : {"poly", "mean", "median"}, optional
        Polynomial fit of ``order`` across dispersion (``"mean"`` is order 0),
        or median of the background pixels.
    order : int, optional
        Polynomial order for ``"poly"``.
    smoothing_length : int, optional
        Odd boxcar length along dispersion applied to the image before the
        fit (0: none).
    sigma_clip : float or None, optional
        Iteratively reject background pixels deviating by more than this many
        standard deviations from the fit (None or 0: no clipping). Sigma is
        taken from the variance arrays, but never below the row's robust
        scatter (1.4826 x median absolute deviation of the residuals), so a
        model that cannot follow the background is not clipped one-sidedly.
    max_clip_iterations : int, optional
        Maximum number of clipping passes.
    margin : (int, int), optional
        Rows at the start and end of the dispersion axis of ``image`` (and
        of the variances) that only feed the smoothing: the fit and the
        outputs cover the rows in between, which match ``background_region``
        and ``aperture``. Giving the real neighbouring rows here makes the
        smoothing of a cutout identical to smoothing the full image.

    Returns
    -------
    BackgroundFit
        The background model (shaped like ``image``) and its variance under
        the aperture (shaped like ``image`` without its last axis).

    Notes
    -----
    The polynomial is fitted in the normalised cross-dispersion coordinate
    ``linspace(-1, 1, n_xdisp)`` with unit weights on valid pixels, which is
    mathematically the fit jwst makes. The variance of the background summed
    under the aperture is ``sum_j var_j w_j**2`` where ``w_j`` is the weight of
    background pixel ``j`` in that sum. For the median, jwst's approximation
    ``(1.2 * npix)**2 * sum_j var_j / N**2`` is used.
    """
    before, after = margin
    rows = slice(before, image.shape[-2] - after)
    smoothed = smooth_along_dispersion(image, smoothing_length)[..., rows, :]
    image, var_rnoise, var_poisson, var_flat = (
        array[..., rows, :] for array in (image, var_rnoise, var_poisson, var_flat)
    )
    stack_shape = image.shape
    n_xdisp = stack_shape[-1]
    # Smoothing runs along dispersion within each integration; every later
    # operation is independent per row, so the stack is then flattened to rows.
    smoothed = smoothed.reshape(-1, n_xdisp)
    n_stack = smoothed.shape[0] // background_region.shape[0]
    background_region = np.tile(background_region, (n_stack, 1))
    aperture = np.tile(aperture, (n_stack, 1))
    image, var_rnoise, var_poisson, var_flat = (
        array.reshape(-1, n_xdisp) for array in (image, var_rnoise, var_poisson, var_flat)
    )
    variance = var_rnoise + var_poisson + var_flat
    valid = np.isfinite(image) & np.isfinite(variance)
    in_region = background_region != 0
    use = in_region & valid & np.isfinite(smoothed)
    # The median (as in jwst) also takes smoothed values at invalid pixels,
    # where smoothing interpolated them; its error counts valid pixels only.
    median_use = in_region & np.isfinite(smoothed)

    if method == "mean":
        method, order = "poly", 0
    if method not in ("poly", "median"):
        raise ValueError(f"unknown background method {method!r}")

    if sigma_clip:
        pixel_sigma = np.sqrt(np.where(variance > 0, variance, np.nan))
    for _ in range(max_clip_iterations if sigma_clip else 1):
        if method == "median":
            masked = np.where(median_use, smoothed, np.nan)
            with np.errstate(invalid="ignore"), _quiet_all_nan():
                level = np.nanmedian(masked, axis=1)
            model = np.broadcast_to(level[:, None], image.shape).copy()
            singular = ~np.isfinite(level)
        else:
            model, pixel_weight, singular = _poly_fit(smoothed, use, aperture, order)
        if not sigma_clip:
            break
        residual = smoothed - model
        mad_sigma = 1.4826 * _row_mad(np.where(use, residual, np.nan))
        # The row's robust scatter is a floor: where the fit cannot follow the
        # background (a slope fitted with a constant), clipping on the pixel
        # noise alone would cut one side of the row and bias the level.
        sigma = np.fmax(pixel_sigma, mad_sigma[:, None])
        clipped = _robust_clip_mask(residual, sigma, use, sigma_clip)
        if np.array_equal(clipped, use):
            break
        median_use &= clipped | ~use
        use = clipped

    if method == "median":
        n_used = use.sum(axis=1)
        aperture_pixels = aperture.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(use, 1.0, 0.0) / n_used[:, None]
        scale = (MEDIAN_ERROR_FACTOR * aperture_pixels) ** 2
        var_terms = [
            scale * np.nansum(component * share**2, axis=1)
            for component in (var_rnoise, var_poisson, var_flat)
        ]
        model = np.where(singular[:, None], 0.0, model)
    else:
        n_used = use.sum(axis=1)
        var_terms = [
            np.nansum(np.where(use, component, 0.0) * pixel_weight**2, axis=1)
            for component in (var_rnoise, var_poisson, var_flat)
        ]
    row_shape = stack_shape[:-1]
    return BackgroundFit(
        model.reshape(stack_shape),
        *(term.reshape(row_shape) for term in var_terms),
        n_used=n_used.reshape(row_shape),
        singular=singular.reshape(row_shape),
    )


def _row_mad(values: np.ndarray) -> np.ndarray:
    with _quiet_all_nan():
        median = np.nanmedian(values, axis=1)
        return np.nanmedian(np.abs(values - median[:, None]), axis=1)


class _quiet_all_nan:
    """Silence NumPy's all-NaN slice warnings inside a block."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        return self

    def __exit__(self, *exc):
        return self._catcher.__exit__(*exc)
