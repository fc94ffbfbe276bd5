"""Figure helpers shared by the diagnostic plots of both modes.

Figures are made with matplotlib's object interface (no pyplot): nothing
here changes the user's matplotlib backend or global state, and steps may
plot from several threads at once. Every axis takes its unit from the
product it shows; legends sit outside the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "SpectrumArrays",
    "flux_scale",
    "legend_above",
    "new_figure",
    "plot_spectra",
    "save_figure",
    "spectra_figure",
    "spectrum_arrays",
    "spectrum_panels",
    "stretch",
]


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
    figure = Figure(figsize=kwargs.pop("figsize", None), layout=kwargs.pop("layout", None))
    return figure, figure.subplots(nrows, ncols, **kwargs)


def save_figure(figure: Figure, path, title: str | None = None, dpi: int = 100) -> str:
    """
    Title, lay out and write a figure; return the path as a string.

    Parameters
    ----------
    figure : Figure
        The figure.
    path : str or Path
        PNG file.
    title : str or None
        Figure title.
    dpi : int
        Resolution.

    Returns
    -------
    str
        The path.
    """
    if title:
        figure.suptitle(title)
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return str(path)


def stretch(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    """
    Display limits from percentiles of the finite values.

    Parameters
    ----------
    image : ndarray
        Values.
    low, high : float
        Percentiles.

    Returns
    -------
    (float, float)
        Limits (distinct even for a flat image).
    """
    finite = np.asarray(image)[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, (low, high))
    return float(vmin), float(vmax if vmax > vmin else vmin + 1.0)


def flux_scale(unit: str | None) -> tuple[float, str]:
    """
    Display factor and axis label for an x1d FLUX column of a given unit.

    Parameters
    ----------
    unit : str or None
        The column's unit.

    Returns
    -------
    (float, str)
        Multiply FLUX by the factor; the label names the unit shown.

    Examples
    --------
    >>> flux_scale("Jy")
    (1000.0, 'flux density (mJy)')
    >>> flux_scale("DN/s")
    (1.0, 'FLUX (DN/s, not flux calibrated)')
    """
    unit = str(unit or "").strip()
    if unit == "Jy":
        return 1.0e3, "flux density (mJy)"
    if unit.upper() in ("DN/S", "DN / S"):
        return 1.0, "FLUX (DN/s, not flux calibrated)"
    return 1.0, f"FLUX ({unit or 'no unit'})"


@dataclass
class SpectrumArrays:
    """
    One spectrum ready to draw.

    Attributes
    ----------
    wavelength, flux, error : ndarray
        Micron, and FLUX and FLUX_ERROR in the product's unit.
    unit : str
        FLUX unit.
    note : str
        What was taken (e.g. "integration 1 of 40"), or "".
    """

    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    unit: str
    note: str = ""


def spectrum_arrays(spec) -> SpectrumArrays:
    """
    The arrays of one x1d spectrum (the first integration of an x1dints).

    Parameters
    ----------
    spec : SpecModel or TSOSpecModel
        A spectrum of an x1d product.

    Returns
    -------
    SpectrumArrays
        Its columns.
    """
    table = spec.spec_table
    wavelength = np.asarray(table["WAVELENGTH"], dtype=float)
    flux = np.asarray(table["FLUX"], dtype=float)
    error = np.asarray(table["FLUX_ERROR"], dtype=float)
    note = ""
    if flux.ndim > 1:
        note = f"integration 1 of {flux.shape[0]}"
        wavelength, flux, error = wavelength[0], flux[0], error[0]
    return SpectrumArrays(wavelength, flux, error, str(table.columns["FLUX"].unit or ""), note)


def legend_above(axis, ncol: int = 3, **kwargs) -> None:
    """A legend in a row just above the axes, so that it never hides data."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        axis.legend(
            handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=ncol,
            fontsize=8, frameon=False, borderaxespad=0.0, **kwargs,
        )  # fmt: skip


def edge_markers(axis, x, values, limits, colour, size=4) -> np.ndarray:
    """
    Values beyond ``limits`` drawn as triangles on the panel's edge (up or down).

    Returns
    -------
    ndarray
        Which values were beyond (NaN never are).
    """
    finite = np.isfinite(values)
    above = finite & (values > limits[1])
    below = finite & (values < limits[0])
    for outside, edge, marker in ((above, limits[1], "^"), (below, limits[0], "v")):
        if np.any(outside):
            axis.plot(x[outside], np.full(np.count_nonzero(outside), edge), marker,
                      color=colour, ms=size, clip_on=False, zorder=3)  # fmt: skip
    return above | below


def _mark_off_scale(axis, curves) -> None:
    """
    Points beyond a panel's range drawn as triangles on its edge, and counted above it.

    The range follows the bulk of the values (a few single bins, a line's
    core, would flatten everything else): what it leaves out is shown, not
    hidden.
    """
    limits = axis.get_ylim()
    extreme = []
    for wavelength, values, colour in curves:
        extreme.extend(values[edge_markers(axis, wavelength, values, limits, colour)].tolist())
    if extreme:
        worst = max(extreme, key=abs)
        axis.text(1.0, 1.02, f"{len(extreme)} bin(s) off scale (triangles; extreme {worst:.3g}%)",
                  transform=axis.transAxes, ha="right", va="bottom", fontsize=7)  # fmt: skip


def spectrum_panels(flux_axis, lower_axis, spectra: dict, truth=None) -> None:
    """
    Spectra with their 1-sigma bands on ``flux_axis``; below, the ratio to the truth or the error.

    Parameters
    ----------
    flux_axis, lower_axis : Axes
        Upper (flux) and lower (ratio or relative error) panels.
    spectra : dict
        Label to :class:`SpectrumArrays` (same unit for all).
    truth : (ndarray, ndarray) or None
        Wavelength and the expected FLUX in the same unit, when known: the
        lower panel then shows ``FLUX / truth - 1`` in percent; otherwise the
        relative 1-sigma error in percent.
    """
    units = {arrays.unit for arrays in spectra.values()}
    scale, label = flux_scale(units.pop() if len(units) == 1 else None)
    styles = ("-", "--", ":", "-.")
    deviations = []
    lower_curves = []
    for index, (name, arrays) in enumerate(spectra.items()):
        colour = f"C{index}"
        flux, error = arrays.flux * scale, arrays.error * scale
        flux_axis.fill_between(
            arrays.wavelength, flux - error, flux + error, color=colour, alpha=0.35, lw=0
        )
        flux_axis.plot(
            arrays.wavelength, flux, styles[index % 4], color=colour, lw=1.0,
            label=f"{name} ({arrays.note})" if arrays.note else name,
        )  # fmt: skip
        if truth is not None:
            expected = np.interp(arrays.wavelength, *truth)
            with np.errstate(invalid="ignore", divide="ignore"):
                deviation = 100.0 * (arrays.flux / expected - 1.0)
            lower_axis.plot(arrays.wavelength, deviation, styles[index % 4], color=colour, lw=0.8)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                deviation = 100.0 * arrays.error / np.abs(arrays.flux)
            lower_axis.plot(arrays.wavelength, deviation, styles[index % 4], color=colour, lw=0.8)
        deviations.append(deviation[np.isfinite(deviation)])
        lower_curves.append((arrays.wavelength, deviation, colour))
    if truth is not None:
        flux_axis.plot(truth[0], truth[1] * scale, "-", color="0.2", lw=2.5, alpha=0.35,
                       label="truth", zorder=0)  # fmt: skip
        lower_axis.axhline(0.0, color="0.3", lw=0.6)
        lower_axis.set_ylabel("FLUX / truth - 1 (%)")
        values = np.concatenate(deviations) if deviations else np.zeros(1)
        if values.size:
            # The scale follows the residuals (a few of their robust widths), never a fixed range.
            centre = float(np.median(values))
            spread = float(np.percentile(np.abs(values - centre), 99))
            limit = max(abs(centre) + 1.3 * spread, 0.05)
            lower_axis.set_ylim(-limit, limit)
    else:
        lower_axis.set_ylabel("1-sigma error (% of FLUX)")
        values = np.concatenate(deviations) if deviations else np.zeros(1)
        if values.size:
            lower_axis.set_ylim(0.0, max(float(np.percentile(values, 99)) * 1.2, 1e-3))
    _mark_off_scale(lower_axis, lower_curves)
    flux_axis.set_ylabel(label)
    lower_axis.set_xlabel("wavelength (micron)")
    legend_above(flux_axis, ncol=4)


def spectra_figure(spectra: dict, truth=None, title: str | None = None) -> Figure:
    """
    One figure comparing x1d spectra: fluxes with 1-sigma bands, and ratio to the truth or error.

    Parameters
    ----------
    spectra : dict
        Label to x1d model (its first spectrum is drawn).
    truth : (ndarray, ndarray) or None
        Wavelength and FLUX (Jy) of the true spectrum, for simulated data.
    title : str or None
        Figure title.

    Returns
    -------
    Figure
        The figure.
    """
    figure, (top, bottom) = new_figure(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]},
        layout="constrained",
    )  # fmt: skip
    arrays = {label: spectrum_arrays(x1d.spec[0]) for label, x1d in spectra.items()}
    expected = None
    if truth is not None:
        order = np.argsort(truth[0])
        expected = (np.asarray(truth[0])[order], np.asarray(truth[1])[order])
    spectrum_panels(top, bottom, arrays, expected)
    if title:
        figure.suptitle(title)
    return figure


def plot_spectra(spectra: dict, path, truth=None, title="MIRI LRS spectrum (mirispec_steps)"):
    """Write :func:`spectra_figure` to the PNG ``path``; returns the path."""
    return save_figure(spectra_figure(spectra, truth, title), path, dpi=110)
