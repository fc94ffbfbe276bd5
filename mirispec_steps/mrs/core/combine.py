"""Spectra of one band from several dithers combined per bin, and bands stitched into one.

Both take arrays only. :func:`combine_dithers` is an inverse-variance weighted
mean per bin with two layers of protection: a dither that disagrees with the
others as a whole (a scale offset, or residuals far beyond its errors: a
corrupted exposure) is reported and left out, and single outlying values are
clipped per bin against the mean of the other dithers. :func:`stitch_bands`
joins bands in wavelength order, cutting each overlap at its midpoint or
averaging there, and measures (never applies unasked) the scale ratio of
neighbouring bands in their overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirispec_steps.core.robust import robust_sigma

__all__ = [
    "CombinedBand",
    "DitherCheck",
    "StitchedSpectrum",
    "combine_dithers",
    "stitch_bands",
]

#: A robust chi-square per bin of a dither against the others above this is a corrupted dither.
MAX_REDUCED_CHI_SQUARE = 4.0
#: Share of a band's bins a dither must have data in.
MIN_VALID_SHARE = 0.5


@dataclass
class DitherCheck:
    """
    How one dither compares with the others.

    Attributes
    ----------
    ratio : float
        Median of its flux over the other dithers' weighted mean.
    ratio_error : float
        Uncertainty of ``ratio`` (robust, from the bins' scatter).
    reduced_chi_square : float
        Robust mean of the squared normalised differences from the others
        once its scale ``ratio`` is taken out (1 when its errors describe
        them).
    valid_share : float
        Share of the bins with data.
    excluded : bool
        Left out of the combination.
    reason : str
        Why (empty when kept).
    """

    ratio: float
    ratio_error: float
    reduced_chi_square: float
    valid_share: float
    excluded: bool = False
    reason: str = ""


@dataclass
class CombinedBand:
    """
    One band combined over dithers.

    Attributes
    ----------
    wavelength, flux, error : ndarray
        ``(K,)`` the shared grid, the weighted mean and its error (NaN where
        no dither has data).
    n_input : ndarray
        ``(K,)`` dithers that contributed to each bin.
    clipped : ndarray
        ``(N, K)`` values left out of a bin as outliers.
    checks : list of DitherCheck
        Per dither, in input order.
    rf_flux : ndarray or None
        ``(K,)`` ``flux`` with residual fringes removed, once fitted.
    leak : ndarray or None
        ``(K,)`` spectral leak subtracted from ``flux`` (3A only).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    n_input: np.ndarray
    clipped: np.ndarray
    checks: list
    rf_flux: np.ndarray | None = None
    leak: np.ndarray | None = None


def _weighted_mean(flux, weight):
    total = weight.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(total > 0, (weight * np.nan_to_num(flux)).sum(axis=0) / total, np.nan)
        error = np.where(total > 0, 1.0 / np.sqrt(total), np.nan)
    return mean, error


def _leave_one_out(flux, weight, tolerance=0.0):
    """
    Each dither against the others' weighted mean, ``(N, K)`` each.

    Returns the normalised difference, the ratio, the others' mean and the
    difference's standard deviation, ``tolerance`` times the others' mean
    added in quadrature (NaN where either side has no data).
    """
    total = weight.sum(axis=0)
    weighted = (weight * np.nan_to_num(flux)).sum(axis=0)
    others_weight = total[None, :] - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        others = (weighted[None, :] - weight * np.nan_to_num(flux)) / others_weight
        sigma = np.sqrt(
            np.where(weight > 0, 1.0 / weight, np.nan)
            + 1.0 / others_weight
            + (tolerance * others) ** 2
        )
        normalised = (flux - others) / sigma
        ratio = flux / others
    usable = (weight > 0) & (others_weight > 0)
    return tuple(np.where(usable, values, np.nan) for values in (normalised, ratio, others, sigma))


def _check(flux, ratio, others, sigma, valid_share: float) -> DitherCheck:
    """A dither's scale against the others, and its residuals once that scale is taken out."""
    finite = np.isfinite(ratio) & np.isfinite(sigma)
    if finite.sum() < 3:
        return DitherCheck(np.nan, np.nan, np.nan, valid_share)
    median = float(np.median(ratio[finite]))
    spread = float(robust_sigma(ratio[finite]))
    # The median's standard error is sqrt(pi / 2) that of a mean.
    ratio_error = 1.2533 * spread / np.sqrt(finite.sum())
    # Robust mean square of what the scale does not explain: the median of z^2 over its
    # Gaussian value (0.4549). A scale offset alone leaves it at 1; a corrupted dither not.
    residual = (flux[finite] - median * others[finite]) / sigma[finite]
    chi_square = float(np.median(residual**2) / 0.4549)
    return DitherCheck(median, ratio_error, chi_square, valid_share)


def combine_dithers(
    flux: np.ndarray,
    error: np.ndarray,
    wavelength: np.ndarray,
    clip_sigma: float = 4.0,
    scale_tolerance: float = 0.01,
    scale_sigma: float = 5.0,
    tolerance: float = 0.01,
    rf_flux: np.ndarray | None = None,
) -> CombinedBand:
    """
    Combine one band's spectra from several dithers on a shared grid.

    Parameters
    ----------
    flux, error : ndarray
        ``(N, K)`` flux densities and their 1-sigma errors (NaN or a
        non-positive error: no data).
    wavelength : ndarray
        ``(K,)`` the grid.
    clip_sigma : float
        A value further than this many sigma from the other dithers' mean
        is left out of its bin (with three or more dithers).
    scale_tolerance, scale_sigma : float
        A dither whose median ratio to the others differs from 1 by more
        than ``scale_tolerance`` and more than ``scale_sigma`` times its
        uncertainty disagrees systematically.
    tolerance : float
        Relative differences between dithers that are expected beyond their
        noise (the PSF model fits each place in the field a little
        differently): added in quadrature to the errors when judging dithers
        and outliers, never in the weights or the errors of the mean.
        Without it a bright source's dithers, whose errors are a few 1e-4 of
        the flux, would all look corrupted.
    rf_flux : ndarray or None
        ``(N, K)`` the same spectra with their residual fringes removed (NaN:
        no data). The dithers are judged and clipped on these (each dither's
        fringes have their own phase: the raw spectra of a bright source
        differ by percents), and both are combined with the same choices.

    Returns
    -------
    CombinedBand
        The combination and the per-dither checks.

    Notes
    -----
    Dither checks run first, each dither against the weighted mean of the
    others: one with data in fewer than half the bins, a robust reduced
    chi-square above 4 (residuals twice its errors: a corrupted exposure) or
    a systematic scale offset is excluded, the worst first, as long as two
    dithers remain (with two, neither can be blamed: both are kept and the
    disagreement is reported in their checks). Then each bin is clipped:
    the value furthest from the mean of the others, beyond ``clip_sigma``,
    is dropped, repeatedly, while three values remain. The mean is weighted
    by the inverse variances and its error is ``1 / sqrt(sum w)``: the
    dithers' noise is independent.

    Examples
    --------
    >>> import numpy as np
    >>> flux = np.array([[1.0, 2.0], [1.2, 2.0], [1.0, 2.0]])
    >>> band = combine_dithers(flux, np.full(flux.shape, 0.01), np.array([5.0, 5.1]))
    >>> band.flux.round(3).tolist(), band.n_input.tolist()
    ([1.0, 2.0], [2, 3])
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    error = np.atleast_2d(np.asarray(error, dtype=float))
    if flux.shape != error.shape or flux.shape[1] != np.size(wavelength):
        raise ValueError(
            f"flux {flux.shape}, error {error.shape} and wavelength {np.shape(wavelength)} "
            "do not match"
        )
    raw = flux
    if rf_flux is not None:
        rf_flux = np.atleast_2d(np.asarray(rf_flux, dtype=float))
        if rf_flux.shape != flux.shape:
            raise ValueError(f"rf_flux {rf_flux.shape} and flux {flux.shape} do not match")
        # Judged without their fringes; a value missing from either is no data.
        flux = np.where(np.isfinite(raw), rf_flux, np.nan)
    n_dithers = flux.shape[0]
    valid = np.isfinite(flux) & np.isfinite(error) & (error > 0)
    with np.errstate(divide="ignore"):
        weight = np.where(valid, 1.0 / np.where(valid, error, 1.0) ** 2, 0.0)
    valid_share = valid.mean(axis=1)
    kept = np.ones(n_dithers, dtype=bool)
    reasons = [""] * n_dithers
    while kept.sum() > 2:
        _, ratio, others, sigma = _leave_one_out(
            flux, np.where(kept[:, None], weight, 0.0), tolerance
        )
        checks = [
            _check(flux[i], ratio[i], others[i], sigma[i], valid_share[i]) for i in range(n_dithers)
        ]
        badness = np.zeros(n_dithers)
        for i in np.flatnonzero(kept):
            check = checks[i]
            if valid_share[i] >= MIN_VALID_SHARE and not np.isfinite(check.ratio):
                continue  # too few bins shared with the others to judge
            # Each criterion's excess over its limit, so that they compare.
            offset = abs(check.ratio - 1.0)
            scale_excess = offset / max(scale_tolerance, scale_sigma * check.ratio_error)
            chi_excess = check.reduced_chi_square / MAX_REDUCED_CHI_SQUARE
            if valid_share[i] < MIN_VALID_SHARE:
                badness[i] = np.inf
                reasons[i] = f"data in only {100 * valid_share[i]:.0f}% of the bins"
            elif scale_excess > 1 and chi_excess <= 1:
                badness[i] = scale_excess
                reasons[i] = (
                    f"its flux is {check.ratio:.4f} +- {check.ratio_error:.4f} times the other "
                    "dithers' (pointing, or a bad exposure)"
                )
            elif not chi_excess <= 1:
                badness[i] = max(chi_excess, scale_excess)
                reasons[i] = (
                    f"differs from the other dithers by {np.sqrt(check.reduced_chi_square):.1f} "
                    "times its errors beyond a scale (corrupted?)"
                )
        if not np.any(badness > 0):
            break
        worst = int(np.argmax(badness))
        kept[worst] = False
        for i in np.flatnonzero(kept):
            reasons[i] = ""
    _, ratio, others, sigma = _leave_one_out(flux, np.where(kept[:, None], weight, 0.0), tolerance)
    checks = []
    for i in range(n_dithers):
        check = _check(flux[i], ratio[i], others[i], sigma[i], valid_share[i])
        check.excluded, check.reason = bool(not kept[i]), reasons[i] if not kept[i] else ""
        checks.append(check)
    use = np.where(kept[:, None], weight, 0.0)
    clipped = np.zeros(flux.shape, dtype=bool)
    while True:
        normalised = _leave_one_out(flux, use, tolerance)[0]
        enough = (use > 0).sum(axis=0) >= 3
        magnitude = np.where(np.isfinite(normalised) & (use > 0), np.abs(normalised), 0.0)
        worst = np.argmax(magnitude, axis=0)
        bins = np.flatnonzero(enough & (magnitude[worst, np.arange(flux.shape[1])] > clip_sigma))
        if bins.size == 0:
            break
        use[worst[bins], bins] = 0.0
        clipped[worst[bins], bins] = True
    mean, mean_error = _weighted_mean(raw, use)
    return CombinedBand(
        wavelength=np.asarray(wavelength, dtype=float),
        flux=mean,
        error=mean_error,
        n_input=(use > 0).sum(axis=0),
        clipped=clipped,
        checks=checks,
        rf_flux=None if rf_flux is None else _weighted_mean(flux, use)[0],
    )


@dataclass
class StitchedSpectrum:
    """
    Bands joined into one spectrum.

    Attributes
    ----------
    wavelength, flux, error : ndarray
        The joined spectrum, increasing in wavelength.
    band : ndarray
        ``(M,)`` the band each value comes from (in an averaged overlap, the
        band whose grid it is on).
    n_input : ndarray
        ``(M,)`` dithers behind each value (summed over bands where averaged).
    rf_flux : ndarray or None
        ``(M,)`` the same for the bands' ``rf_flux`` (when every band has one).
    scale_ratios : dict
        ``"1A/1B"`` -> median ratio of the two bands' fluxes in their overlap
        (the second interpolated onto the first's grid), NaN without overlap.
    scales : dict
        Band -> the factor applied (1 unless scale matching was asked for).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    band: np.ndarray
    n_input: np.ndarray
    scale_ratios: dict
    scales: dict
    rf_flux: np.ndarray | None = None


def _overlap_ratio(first: CombinedBand, second: CombinedBand) -> float:
    low, high = second.wavelength[0], first.wavelength[-1]
    inside = (first.wavelength >= low) & (first.wavelength <= high) & np.isfinite(first.flux)
    good = np.isfinite(second.flux)
    if inside.sum() < 3 or good.sum() < 3:
        return np.nan
    other = np.interp(first.wavelength[inside], second.wavelength[good], second.flux[good])
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nanmedian(first.flux[inside] / other))


def stitch_bands(bands: dict, overlap: str = "cut", match_scale: bool = False) -> StitchedSpectrum:
    """
    Join combined bands into one spectrum over their full range.

    Parameters
    ----------
    bands : dict
        Band name (``1A`` ... ``4C``) to :class:`CombinedBand`.
    overlap : str
        ``cut``: each overlap is split at its midpoint, every value comes
        from one band. ``average``: in an overlap, each band's values are
        averaged (inverse variance) with the other band interpolated
        linearly onto their wavelengths, and both bands' values are kept
        (interleaved; neighbouring values are then correlated).
    match_scale : bool
        Scale every band to its predecessor's level in their overlap (the
        first band fixed). The ratios are measured and returned either way.

    Returns
    -------
    StitchedSpectrum
        The joined spectrum.

    Examples
    --------
    >>> import numpy as np
    >>> first = combine_dithers(np.ones((2, 5)), np.full((2, 5), 0.1), np.linspace(5, 6, 5))
    >>> second = combine_dithers(np.ones((2, 5)), np.full((2, 5), 0.1), np.linspace(5.8, 7, 5))
    >>> joined = stitch_bands({"1A": first, "1B": second})
    >>> joined.wavelength.round(2).tolist()
    [5.0, 5.25, 5.5, 5.75, 6.1, 6.4, 6.7, 7.0]
    """
    if overlap not in ("cut", "average"):
        raise ValueError(f"overlap must be 'cut' or 'average', got {overlap!r}")
    names = sorted(bands, key=lambda name: float(np.nanmedian(bands[name].wavelength)))
    ratios, scales = {}, {names[0]: 1.0} if names else {}
    for previous, name in zip(names[:-1], names[1:], strict=True):
        ratio = _overlap_ratio(bands[previous], bands[name])
        ratios[f"{previous}/{name}"] = ratio
        factor = ratio if match_scale and np.isfinite(ratio) else 1.0
        scales[name] = scales[previous] * factor
    with_rf = bool(names) and all(bands[name].rf_flux is not None for name in names)
    pieces = []
    for index, name in enumerate(names):
        band = bands[name]
        # Every flux column (FLUX, and RF_FLUX when fitted) goes through the same operations.
        columns = [band.flux] + ([band.rf_flux] if with_rf else [])
        columns = [values * scales[name] for values in columns]
        wavelength, error = band.wavelength, band.error * scales[name]
        keep = np.ones(wavelength.size, dtype=bool)
        joined = [values.copy() for values in columns]
        joined_error, count = error.copy(), band.n_input.astype(float)
        for neighbour in (index - 1, index + 1):
            if not 0 <= neighbour < len(names):
                continue
            other = bands[names[neighbour]]
            other_scale = scales[names[neighbour]]
            low = max(wavelength[0], other.wavelength[0])
            high = min(wavelength[-1], other.wavelength[-1])
            if low >= high:
                continue
            inside = (wavelength >= low) & (wavelength <= high)
            if overlap == "cut":
                middle = 0.5 * (low + high)
                keep &= ~inside | ((wavelength < middle) if neighbour > index else
                                   (wavelength >= middle))  # fmt: skip
                continue
            good = np.isfinite(other.flux)
            if good.sum() < 2:
                continue
            other_columns = [other.flux] + ([other.rf_flux] if with_rf else [])
            other_error = other_scale * np.interp(
                wavelength[inside], other.wavelength[good], other.error[good]
            )
            mine = np.isfinite(columns[0][inside])
            with np.errstate(divide="ignore", invalid="ignore"):
                weight_mine = np.where(mine, 1.0 / error[inside] ** 2, 0.0)
                weight_other = 1.0 / other_error**2
                total = weight_mine + weight_other
                for values, result, other_values in zip(
                    columns, joined, other_columns, strict=True
                ):
                    other_flux = other_scale * np.interp(
                        wavelength[inside], other.wavelength[good], other_values[good]
                    )
                    result[inside] = (
                        weight_mine * np.nan_to_num(values[inside]) + weight_other * other_flux
                    ) / total
                joined_error[inside] = 1.0 / np.sqrt(total)
            count[inside] += np.interp(
                wavelength[inside], other.wavelength, other.n_input.astype(float)
            )
        pieces.append(
            (wavelength[keep], joined_error[keep], np.full(keep.sum(), name), count[keep],
             *(values[keep] for values in joined))
        )  # fmt: skip
    if not pieces:
        raise ValueError("no bands to stitch")
    wavelength, error, band_names, count, flux, *rf_flux = (
        np.concatenate(parts) for parts in zip(*pieces, strict=True)
    )
    order = np.argsort(wavelength, kind="stable")
    return StitchedSpectrum(
        wavelength=wavelength[order],
        flux=flux[order],
        error=error[order],
        band=band_names[order],
        n_input=count[order],
        scale_ratios=ratios,
        scales=scales,
        rf_flux=rf_flux[0][order] if rf_flux else None,
    )
