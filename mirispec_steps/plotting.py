"""Diagnostic plots (matplotlib, no screen needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_spectrum"]


def plot_spectrum(x1d, path, truth=None, label="box extraction"):
    """
    Plot an x1d spectrum with its 1-sigma errors (and the truth if known).

    Parameters
    ----------
    x1d : MultiSpecModel
        The spectrum (first one is plotted).
    path : str or Path
        PNG file to write.
    truth : (ndarray, ndarray) or None
        Wavelength and flux of the true spectrum, for simulated data.
    label : str
        Legend label.

    Returns
    -------
    Path-like
        ``path``.
    """
    table = x1d.spec[0].spec_table
    wavelength = np.asarray(table["WAVELENGTH"])
    flux = np.asarray(table["FLUX"]) * 1e3
    error = np.asarray(table["FLUX_ERROR"]) * 1e3
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.fill_between(wavelength, flux - error, flux + error, color="C0", alpha=0.3, lw=0)
    top.plot(wavelength, flux, color="C0", lw=1, label=label)
    if truth is not None:
        order = np.argsort(truth[0])
        top.plot(truth[0][order], truth[1][order] * 1e3, "k--", lw=1, label="truth")
        expected = np.interp(wavelength, truth[0][order], truth[1][order]) * 1e3
        bottom.plot(wavelength, flux / expected - 1, color="C0", lw=1)
        bottom.set_ylabel("FLUX / truth - 1")
        bottom.axhline(0, color="k", lw=0.5)
    else:
        bottom.plot(wavelength, flux / np.where(error > 0, error, np.nan), color="C0", lw=1)
        bottom.set_ylabel("S/N")
    top.set_ylabel("FLUX (mJy)")
    bottom.set_xlabel("wavelength (micron)")
    top.legend()
    top.set_title("MIRI LRS spectrum (mirispec_steps)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
