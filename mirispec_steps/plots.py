"""Figure helpers shared by the diagnostic plots of both modes.

Figures are made with matplotlib's object interface (no pyplot): nothing
here changes the user's matplotlib backend or global state, and steps may
plot from several threads at once.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["new_figure", "plot_spectra", "save_figure", "spectrum_panel", "stretch"]


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """
    A figure and its axes, like ``pyplot.subplots`` but without pyplot.

    Parameters
    ----------
    nrows, ncols : int
        Grid of axes.
    **kwargs
        ``figsize`` and the keywords of :meth:`matplotlib.figure.Figure.subplots`.

    Returns
    -------
    (Figure, Axes or array of Axes)
        The figure and its axes.
    """
    figure = Figure(figsize=kwargs.pop("figsize", None))
    return figure, figure.subplots(nrows, ncols, **kwargs)


def save_figure(figure, path, title: str, dpi: int) -> str:
    """Title, lay out, write and close a figure; return the path as a string."""
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return str(path)


def stretch(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    """Display limits from percentiles of the finite values."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, (low, high))
    return float(vmin), float(vmax if vmax > vmin else vmin + 1.0)


def spectrum_panel(axis, x1d, label: str) -> None:
    """Spectrum with its 1-sigma band on ``axis`` and its S/N on a twin axis."""
    table = x1d.spec[0].spec_table
    wavelength = np.asarray(table["WAVELENGTH"], dtype=float)
    flux = np.asarray(table["FLUX"], dtype=float)
    error = np.asarray(table["FLUX_ERROR"], dtype=float)
    if flux.ndim > 1:  # x1dints: the first integration
        wavelength, flux, error = wavelength[0], flux[0], error[0]
    axis.fill_between(wavelength, (flux - error) * 1e3, (flux + error) * 1e3, color="0.75", lw=0)
    axis.plot(wavelength, flux * 1e3, "k-", lw=0.8, label=f"{label} +- 1 sigma")
    axis.set_xlabel("wavelength (micron)")
    axis.set_ylabel("FLUX (mJy)")
    snr_axis = axis.twinx()
    snr_axis.plot(wavelength, flux / np.where(error > 0, error, np.nan), "C1-", lw=0.6, alpha=0.7)
    snr_axis.set_ylabel("S/N", color="C1")
    axis.legend(fontsize=8, loc="upper right")


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
    figure, (top, bottom) = new_figure(
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
    return path
