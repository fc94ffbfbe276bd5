"""Residual fringes of a point source's 1-D spectrum, fitted with jwst's own code.

The fringe flat is measured on extended illumination; a point source's
fringes differ in contrast and phase, so its calibrated spectrum keeps
residual fringes of a few percent (the 2.9 cm^-1 detector fringe in every
channel, the 0.4 cm^-1 dichroic fringe in channels 3 and 4). jwst fits them in
1-D (``jwst.residual_fringe.utils.fit_residual_fringes_1d``: a spline
continuum with features masked, then sums of sines in wavenumber chosen by
Bayesian evidence), which :func:`remove_residual_fringes` calls unchanged, on
one band at a time as jwst's ``extract_1d`` does with ``ifu_rfcorr``.

jwst's fit masks spectral features one of two ways (``clip_features``):
sigma-clipping the spectrum against its envelope, or looking for lines above
5% of the continuum. On bright spectra with percent-level fringes the first
sometimes takes the fringe peaks for features and leaves the fringes larger
than they were (3 of 8 channel 3C/4C spectra of a simulated dither set), the
second sometimes fits the 4C fringes poorly (2 of 8). The first is run, and
unless it removes four fifths of the fringe level measured on the data alone
(:func:`fringe_level`), the second too; the one that leaves the least is
kept. When neither reduces it, the spectrum is left as it is and the reason
is given.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, median_filter

from mirispec_steps.core.robust import robust_sigma

__all__ = [
    "DETECTOR_FRINGE_PERIOD",
    "DICHROIC_FRINGE_PERIOD",
    "ResidualFringeFit",
    "fringe_amplitude",
    "fringe_level",
    "remove_residual_fringes",
]

log = logging.getLogger(__name__)

#: Period (cm^-1, in wavenumber) of the main MRS detector fringe.
DETECTOR_FRINGE_PERIOD = 2.9
#: Period (cm^-1) of the dichroic fringe of channels 3 and 4.
DICHROIC_FRINGE_PERIOD = 0.4
#: A fit that leaves less than this share of the fringe level is kept without trying the
#: other way of masking features.
CLEAR_REDUCTION = 0.2


@dataclass
class ResidualFringeFit:
    """
    A band's spectrum with its residual fringes removed.

    Attributes
    ----------
    flux : ndarray
        ``(K,)`` the corrected flux (NaN where the input is).
    factor : ndarray
        ``(K,)`` corrected over input flux (1 where nothing was fitted).
    fitted : bool
        A fit of jwst's was applied; False when both failed, found too
        little data or did not reduce the fringes (the flux is the input's).
    message : str
        Why nothing was applied.
    level : tuple of float
        Fringe level (:func:`fringe_level`) before and after.
    """

    flux: np.ndarray
    factor: np.ndarray
    fitted: bool
    message: str = ""
    level: tuple = (np.nan, np.nan)


def fringe_level(wavelength: np.ndarray, flux: np.ndarray, channel: int) -> float:
    """
    How much fringe a spectrum holds, from the data alone.

    The spectrum over its running median (two detector-fringe periods wide),
    minus 1, with features (beyond 5 robust sigma, and a period around them)
    left out, has its sinusoid amplitude measured at the fringe periods
    (:func:`fringe_amplitude`, the mean over windows); the detector
    fringe's and, in channels 3 and 4 where the bins sample it, the dichroic
    fringe's amplitudes are summed.

    Parameters
    ----------
    wavelength, flux : ndarray
        ``(K,)`` the spectrum (NaN or non-positive values skipped).
    channel : int
        MRS channel.

    Returns
    -------
    float
        Relative amplitude (NaN with too few data).
    """
    wavelength = np.asarray(wavelength, dtype=float)
    flux = np.asarray(flux, dtype=float)
    good = np.isfinite(flux) & (flux > 0)
    if good.sum() < 20:
        return np.nan
    wavelength, flux = wavelength[good], flux[good]
    step = np.median(np.abs(np.diff(1.0e4 / wavelength)))
    size = max(3, int(round(2 * DETECTOR_FRINGE_PERIOD / step)) | 1)
    relative = flux / median_filter(flux, size=size, mode="nearest") - 1.0
    # Lines and other features, and the bins around them, are no fringes.
    spread = max(float(robust_sigma(relative)), 1.0e-4)
    features = np.abs(relative - np.median(relative)) > 5.0 * spread
    relative[binary_dilation(features, iterations=size // 2)] = np.nan
    periods = [DETECTOR_FRINGE_PERIOD] + ([DICHROIC_FRINGE_PERIOD] if channel >= 3 else [])
    level = 0.0
    # A period sampled by fewer than four bins cannot be measured (the dichroic fringe
    # is finer than the bins in much of channels 3 and 4).
    for period in (period for period in periods if period >= 4 * step):
        amplitudes = fringe_amplitude(wavelength, relative, period)
        if amplitudes.size:
            # The mean: a stretch the fit left alone (jwst ignores > 27.6 micron) counts.
            level += float(np.mean(amplitudes))
    return level


def remove_residual_fringes(
    wavelength: np.ndarray, flux: np.ndarray, channel: int
) -> ResidualFringeFit:
    """
    Fit and divide out the residual fringes of one band's spectrum.

    Parameters
    ----------
    wavelength : ndarray
        ``(K,)`` increasing (micron).
    flux : ndarray
        ``(K,)`` flux density; NaN or non-positive values are left out of
        the fit and unchanged.
    channel : int
        MRS channel, 1 to 4 (sets which fringe frequencies are fitted).

    Returns
    -------
    ResidualFringeFit
        The corrected flux; the input's when jwst's fits could not run or
        did not reduce the fringes.

    Notes
    -----
    jwst's fit sees only ``flux`` and its own weights (``flux`` over its
    median); the correction is a multiplicative factor close to 1, so the
    flux errors are carried over unchanged, as jwst does (its x1d has no
    error column for ``RF_FLUX``).
    """
    from jwst.residual_fringe.utils import fit_residual_fringes_1d

    wavelength = np.asarray(wavelength, dtype=float)
    flux = np.asarray(flux, dtype=float)
    usable = np.isfinite(flux) & (flux > 0)
    unchanged = ResidualFringeFit(flux.copy(), np.ones(flux.size), False)
    if usable.sum() < 20:
        unchanged.message = f"only {int(usable.sum())} usable bins"
        return unchanged
    before = fringe_level(wavelength, flux, channel)
    best, failures = None, []
    for clip_features in (True, False):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                # BayesicFitting warns on every poorly conditioned trial model.
                warnings.simplefilter("ignore")
                corrected = fit_residual_fringes_1d(
                    np.where(usable, flux, 0.0), wavelength, channel=int(channel),
                    clip_features=clip_features,
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - jwst's own policy: a failed fit is not applied
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        corrected = np.where(usable, corrected, flux)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(usable, corrected / flux, 1.0)
        if not np.all(np.isfinite(factor[usable])) or np.any(factor[usable] <= 0):
            failures.append("non-finite or negative values")
            continue
        level = fringe_level(wavelength, corrected, channel)
        if best is None or level < best.level[1]:
            best = ResidualFringeFit(corrected, factor, True, "", (before, level))
        if level < CLEAR_REDUCTION * before:
            break  # the first way worked: the second is not needed
    if best is None:
        unchanged.message = f"jwst's residual-fringe fit failed ({'; '.join(failures)})"
        return unchanged
    if not best.level[1] < before:
        unchanged.message = (
            f"jwst's residual-fringe fit did not reduce the fringes ({100 * before:.2f}% -> "
            f"{100 * best.level[1]:.2f}%)"
        )
        unchanged.level = (before, before)
        return unchanged
    return best


def fringe_amplitude(
    wavelength: np.ndarray,
    relative: np.ndarray,
    period: float = DETECTOR_FRINGE_PERIOD,
    periods_per_window: float = 8.0,
) -> np.ndarray:
    """
    Amplitude of a sinusoid of known period in wavenumber, window by window.

    A measurement, not a correction: how much fringe is left in a spectrum
    over its truth (or any smooth model).

    Parameters
    ----------
    wavelength : ndarray
        ``(K,)`` micron.
    relative : ndarray
        ``(K,)`` the spectrum over its truth, minus 1 (NaN values skipped).
    period : float
        Fringe period in wavenumber (cm^-1).
    periods_per_window : float
        Window length in periods; each window fits an offset, a slope and
        the sinusoid by least squares.

    Returns
    -------
    ndarray
        Amplitude in each window with at least four samples per period.

    Examples
    --------
    >>> import numpy as np
    >>> wavelength = np.linspace(5.0, 5.7, 2000)
    >>> relative = 0.02 * np.cos(2 * np.pi * (1e4 / wavelength) / 2.9 + 0.3)
    >>> float(np.median(fringe_amplitude(wavelength, relative)).round(4))
    0.02
    """
    wavenumber = 1.0e4 / np.asarray(wavelength, dtype=float)
    relative = np.asarray(relative, dtype=float)
    good = np.isfinite(wavenumber) & np.isfinite(relative)
    wavenumber, relative = wavenumber[good], relative[good]
    if wavenumber.size == 0:
        return np.empty(0)
    window = periods_per_window * period
    edges = np.arange(wavenumber.min(), wavenumber.max() + window, window)
    amplitudes = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (wavenumber >= low) & (wavenumber < high)
        if inside.sum() < 4 * periods_per_window:
            continue
        k = wavenumber[inside]
        phase = 2.0 * np.pi * k / period
        design = np.column_stack([np.ones(k.size), k - k.mean(), np.cos(phase), np.sin(phase)])
        coefficients, *_ = np.linalg.lstsq(design, relative[inside], rcond=None)
        amplitudes.append(np.hypot(coefficients[2], coefficients[3]))
    return np.asarray(amplitudes)
