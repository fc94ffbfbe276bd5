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

from mirispec_steps.core.optimal import polynomial_basis
from mirispec_steps.core.robust import masked_median, nan_boxcar, robust_sigma

__all__ = ["BackgroundFit", "fit_background"]

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


def _poly_fit(
    image: np.ndarray,
    use: np.ndarray,
    aperture: np.ndarray,
    order: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise weighted polynomial fit; returns model, aperture pixel weights, singular."""
    n_disp, n_xdisp = image.shape
    design = polynomial_basis(n_xdisp, order).T
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
    smoothed = nan_boxcar(image, smoothing_length, axis=-2, extend_edges=True)[0][..., rows, :]
    stack_shape = image[..., rows, :].shape
    # Smoothing runs along dispersion within each integration; every later
    # operation is independent per row, so the stack is then flattened to rows.
    flat = _RowStack.flatten(
        smoothed, image[..., rows, :], (var_rnoise, var_poisson, var_flat), rows,
        background_region, aperture,
    )  # fmt: skip
    if method == "mean":
        method, order = "poly", 0
    if method not in ("poly", "median"):
        raise ValueError(f"unknown background method {method!r}")
    model, pixel_weight, singular, use = _fit_with_clipping(
        flat, method, order, sigma_clip, max_clip_iterations
    )
    if method == "median":
        var_terms = _median_variance(flat, use)
        model = np.where(singular[:, None], 0.0, model)
    else:
        var_terms = [
            np.nansum(np.where(use, component, 0.0) * pixel_weight**2, axis=1)
            for component in flat.variances
        ]
    row_shape = stack_shape[:-1]
    return BackgroundFit(
        model.reshape(stack_shape),
        *(term.reshape(row_shape) for term in var_terms),
        n_used=use.sum(axis=1).reshape(row_shape),
        singular=singular.reshape(row_shape),
    )


@dataclass
class _RowStack:
    """The rows of a stack of integrations, flattened: ``(n_int * n_disp, n_xdisp)``."""

    smoothed: np.ndarray
    image: np.ndarray
    variances: tuple[np.ndarray, np.ndarray, np.ndarray]
    background_region: np.ndarray
    aperture: np.ndarray

    @classmethod
    def flatten(cls, smoothed, image, variances, rows, background_region, aperture) -> _RowStack:
        n_xdisp = image.shape[-1]
        smoothed = smoothed.reshape(-1, n_xdisp)
        n_stack = smoothed.shape[0] // background_region.shape[0]
        return cls(
            smoothed,
            image.reshape(-1, n_xdisp),
            tuple(v[..., rows, :].reshape(-1, n_xdisp) for v in variances),
            np.tile(background_region, (n_stack, 1)),
            np.tile(aperture, (n_stack, 1)),
        )

    @property
    def variance(self) -> np.ndarray:
        return sum(self.variances)


def _fit_with_clipping(flat: _RowStack, method, order, sigma_clip, max_iterations):
    """Row fits, refitted after clipping outliers; returns model, weights, singular, pixels used."""
    variance = flat.variance
    valid = np.isfinite(flat.image) & np.isfinite(variance)
    in_region = flat.background_region != 0
    use = in_region & valid & np.isfinite(flat.smoothed)
    # The median (as in jwst) also takes smoothed values at invalid pixels,
    # where smoothing interpolated them; its error counts valid pixels only.
    median_use = in_region & np.isfinite(flat.smoothed)
    pixel_sigma = np.sqrt(np.where(variance > 0, variance, np.nan)) if sigma_clip else None
    pixel_weight = None
    for _ in range(max_iterations if sigma_clip else 1):
        if method == "median":
            level = masked_median(flat.smoothed, median_use & ~np.isnan(flat.smoothed), axis=1)
            model = np.broadcast_to(level[:, None], flat.image.shape).copy()
            singular = ~np.isfinite(level)
        else:
            model, pixel_weight, singular = _poly_fit(flat.smoothed, use, flat.aperture, order)
        if not sigma_clip:
            break
        residual = flat.smoothed - model
        # The row's robust scatter is a floor: where the fit cannot follow the
        # background (a slope fitted with a constant), clipping on the pixel
        # noise alone would cut one side of the row and bias the level.
        sigma = np.fmax(pixel_sigma, robust_sigma(residual, use)[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            clipped = use & ~(np.abs(residual) / sigma > sigma_clip)
        if np.array_equal(clipped, use):
            break
        median_use &= clipped | ~use
        use = clipped
    return model, pixel_weight, singular, use


def _median_variance(flat: _RowStack, use: np.ndarray) -> list[np.ndarray]:
    """jwst's variance of a median background summed under the aperture."""
    n_used = use.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(use, 1.0, 0.0) / n_used[:, None]
    scale = (MEDIAN_ERROR_FACTOR * flat.aperture.sum(axis=1)) ** 2
    return [scale * np.nansum(component * share**2, axis=1) for component in flat.variances]
