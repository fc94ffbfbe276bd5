"""Diagnostic plots (matplotlib, no screen needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_spectrum", "plot_spectra"]


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
    return plot_spectra({label: x1d}, path, truth)


def plot_spectra(spectra: dict, path, truth=None, title="MIRI LRS spectrum (mirispec_steps)"):
    """
    Plot several x1d spectra with 1-sigma error bands, and their ratio to the truth or S/N.

    Parameters
    ----------
    spectra : dict
        Legend label to x1d model (the first spectrum of each is plotted).
    path : str or Path
        PNG file to write.
    truth : (ndarray, ndarray) or None
        Wavelength and flux (Jy) of the true spectrum, for simulated data;
        without it the lower panel shows S/N.
    title : str
        Figure title.

    Returns
    -------
    Path-like
        ``path``.
    """
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    order = None if truth is None else np.argsort(truth[0])
    for index, (label, x1d) in enumerate(spectra.items()):
        colour = f"C{index}"
        table = x1d.spec[0].spec_table
        wavelength = np.asarray(table["WAVELENGTH"]).ravel()
        flux = np.asarray(table["FLUX"]).ravel() * 1e3
        error = np.asarray(table["FLUX_ERROR"]).ravel() * 1e3
        top.fill_between(wavelength, flux - error, flux + error, color=colour, alpha=0.3, lw=0)
        top.plot(wavelength, flux, color=colour, lw=1, label=label)
        if truth is not None:
            expected = np.interp(wavelength, truth[0][order], truth[1][order]) * 1e3
            bottom.plot(wavelength, flux / expected - 1, color=colour, lw=1)
        else:
            snr = flux / np.where(error > 0, error, np.nan)
            bottom.plot(wavelength, snr, color=colour, lw=1)
    if truth is not None:
        top.plot(truth[0][order], truth[1][order] * 1e3, "k--", lw=1, label="truth")
        bottom.set_ylabel("FLUX / truth - 1")
        bottom.axhline(0, color="k", lw=0.5)
    else:
        bottom.set_ylabel("S/N")
    top.set_ylabel("FLUX (mJy)")
    bottom.set_xlabel("wavelength (micron)")
    top.legend()
    top.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_centroid(table, path, title="MRS source position (mirispec_steps)"):
    """
    Centroid versus wavelength with the smooth track, one row of panels per channel.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`mirispec_steps.read_centroid`.
    path : str or Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.
    """
    bands = list(dict.fromkeys(np.asarray(table["band"]).tolist()))
    figure, axes = plt.subplots(len(bands), 2, figsize=(11, 3.2 * len(bands)), squeeze=False)
    colours = {"ok": "tab:blue", "low_signal": "tab:orange", "outlier": "tab:red", "fixed": "k"}
    for row, band in zip(axes, bands, strict=True):
        rows = table[table["band"] == band]
        wavelength = np.asarray(rows["wavelength"])
        status = np.asarray(rows["status"]).astype(str)
        for axis, name in zip(row, ("alpha", "beta"), strict=True):
            for label, colour in colours.items():
                chosen = status == label
                if np.any(chosen):
                    axis.errorbar(
                        wavelength[chosen],
                        np.asarray(rows[name])[chosen],
                        yerr=np.asarray(rows[f"{name}_err"])[chosen],
                        fmt=".",
                        ms=3,
                        color=colour,
                        alpha=0.6,
                        label=f"{label} ({np.count_nonzero(chosen)})",
                    )
            failed = np.count_nonzero(status == "failed")
            axis.plot(wavelength, np.asarray(rows[f"{name}_smooth"]), "g-", lw=1.5, label="track")
            axis.set_xlabel("wavelength (micron)")
            axis.set_ylabel(f"{name} (arcsec), band {band}")
            axis.set_title(f"{band} {name}" + (f"; {failed} failed bins" if failed else ""))
            axis.legend(fontsize=7, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return str(path)
