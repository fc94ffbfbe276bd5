"""The second-order spectral leak of 1B light into channel 3A, with its error.

The channel 3A grating passes 6.1 micron light in second order onto the
detector where first-order 12.2 micron light falls, so a 3A spectrum holds
``leak(lambda) * F_1B(lambda / 2)`` too. jwst's ``spectral_leak`` step
subtracts exactly that, with ``leak`` from the ``mrsptcorr`` reference
(``leakcor_table``: ``wavelength``, ``frac_leak``, ``err_leak``) and ``F_1B``
the 1B spectrum interpolated at half the wavelength;
:func:`spectral_leak` computes the same and also propagates the 1B spectrum's
and the reference's errors (jwst propagates none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LeakCurve", "spectral_leak"]


@dataclass
class LeakCurve:
    """
    The leak reference's table.

    Attributes
    ----------
    wavelength : ndarray
        Channel 3A wavelengths (micron), increasing.
    fraction, error : ndarray
        ``F_leak / F(lambda / 2)`` and its 1-sigma uncertainty.
    """

    wavelength: np.ndarray
    fraction: np.ndarray
    error: np.ndarray


def spectral_leak(
    wavelength_3a: np.ndarray,
    wavelength_1b: np.ndarray,
    flux_1b: np.ndarray,
    error_1b: np.ndarray,
    curve: LeakCurve,
) -> tuple[np.ndarray, np.ndarray]:
    """
    The leaked flux in a channel 3A spectrum and its error.

    Parameters
    ----------
    wavelength_3a : ndarray
        ``(K,)`` the 3A grid (micron).
    wavelength_1b, flux_1b, error_1b : ndarray
        ``(J,)`` the 1B spectrum; NaN values are skipped.
    curve : LeakCurve
        The leak fraction.

    Returns
    -------
    leak, leak_error : ndarray
        ``(K,)`` to subtract from the 3A flux (same units as ``flux_1b``),
        and its 1-sigma error (to add in quadrature to the 3A errors).

    Notes
    -----
    As jwst's ``spectral_leak.do_correction``: both interpolations are
    linear, and outside the tables they hold the end values (the leak
    table ends where the leak is zero; the 1B grid covers the 3A grid's
    half). The 1B error is interpolated the same way: the correction uses
    about one 1B bin per 3A bin, so its noise is that bin's.

    Examples
    --------
    >>> import numpy as np
    >>> curve = LeakCurve(np.array([12.0, 12.4]), np.array([0.02, 0.02]), np.zeros(2))
    >>> leak, error = spectral_leak(np.array([12.2]), np.array([6.0, 6.2]),
    ...                             np.array([1.0, 1.0]), np.array([0.01, 0.01]), curve)
    >>> float(leak[0]), float(error[0])
    (0.02, 0.0002)
    """
    wavelength_3a = np.asarray(wavelength_3a, dtype=float)
    good = np.isfinite(flux_1b) & np.isfinite(error_1b) & np.isfinite(wavelength_1b)
    if good.sum() < 2:
        raise ValueError("the 1B spectrum has fewer than two usable values")
    half = 2.0 * np.asarray(wavelength_1b, dtype=float)[good]
    source = np.interp(wavelength_3a, half, np.asarray(flux_1b, dtype=float)[good])
    source_error = np.interp(wavelength_3a, half, np.asarray(error_1b, dtype=float)[good])
    fraction = np.interp(wavelength_3a, curve.wavelength, curve.fraction)
    fraction_error = np.interp(wavelength_3a, curve.wavelength, curve.error)
    leak = fraction * source
    leak_error = np.hypot(fraction * source_error, fraction_error * source)
    return leak, leak_error
