"""Diagnostic plots of the LRS extractions.

Each figure is built by a ``*_figure`` function (returns a matplotlib
Figure, for notebooks and tests) and written by the matching ``plot_*``.
Images show the region around the source with a colour bar in the data's
unit; spectra come with their 1-sigma band and, below, the relative error.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mirispec_steps.core.robust import nan_mean
from mirispec_steps.lrs.exposure import LrsExposure, to_dispersion_major
from mirispec_steps.plots import (
    legend_above,
    save_figure,
    spectrum_arrays,
    spectrum_panels,
    stretch,
)

__all__ = [
    "box_figure",
    "optimal_figure",
    "plot_lrs_box",
    "plot_lrs_optimal",
    "plot_lrs_psf",
    "psf_figure",
]

#: Columns shown either side of the extraction region.
MARGIN_COLUMNS = 8


def _mean_image(values: np.ndarray, dispaxis: int) -> np.ndarray:
    """An image (the mean over integrations) with dispersion along the rows."""
    image = np.asarray(values, dtype=float)
    if image.ndim == 3:
        image = nan_mean(image, axis=0)  # never-valid pixels stay NaN
    return to_dispersion_major(image, dispaxis)


def _data_unit(exposure: LrsExposure) -> str:
    return str(exposure.model.meta.bunit_data or "data units")


def _layout(width_ratios, figsize) -> tuple[Figure, list, object]:
    """Image panels in one row, and a spectrum column of two rows (flux over error)."""
    figure = Figure(figsize=figsize, layout="constrained")
    grid = figure.add_gridspec(2, len(width_ratios), width_ratios=width_ratios,
                               height_ratios=[3, 1.2])  # fmt: skip
    images = [figure.add_subplot(grid[:, column]) for column in range(len(width_ratios) - 1)]
    flux_axis = figure.add_subplot(grid[0, -1])
    error_axis = figure.add_subplot(grid[1, -1], sharex=flux_axis)
    return figure, images, (flux_axis, error_axis)


def _show_image(figure, axis, image, cut, extent, label, cmap="gray_r", limits=None):
    vmin, vmax = limits or stretch(image[cut])
    shown = axis.imshow(image[cut], origin="lower", aspect="auto", cmap=cmap, vmin=vmin,
                        vmax=vmax, extent=extent, interpolation="nearest")  # fmt: skip
    figure.colorbar(shown, ax=axis, label=label, shrink=0.9, pad=0.02)
    axis.set_xlabel("cross-dispersion pixel")
    axis.set_ylabel("dispersion pixel")
    return shown


def box_figure(exposure: LrsExposure, products, title="LRS box extraction") -> Figure:
    """
    The aperture (and background regions, when used) over the image, and the spectrum.

    Parameters
    ----------
    exposure : LrsExposure
        The LRS input (s2d, cal or calints; the mean of the integrations is shown).
    products : BoxProducts
        From :func:`mirispec_steps.lrs.box.extract_box`.
    title : str
        Figure title.

    Returns
    -------
    Figure
        The figure.
    """
    image = _mean_image(exposure.model.data, exposure.dispaxis)
    aperture = np.asarray(products.aperture, dtype=float)
    background = products.background_region
    has_background = background is not None and np.any(np.asarray(background) > 0)
    used = aperture > 0 if not has_background else (aperture > 0) | (background > 0)
    rows, columns = np.nonzero(used)
    top, bottom = max(rows.min() - 5, 0), min(rows.max() + 6, image.shape[0])
    left = max(columns.min() - MARGIN_COLUMNS, 0)
    right = min(columns.max() + MARGIN_COLUMNS + 1, image.shape[1])
    cut = (slice(top, bottom), slice(left, right))
    extent = (left - 0.5, right - 0.5, top - 0.5, bottom - 0.5)

    figure, (image_axis,), (flux_axis, error_axis) = _layout([1.0, 2.3], (13, 6.5))
    _show_image(
        figure, image_axis, image, cut, extent, f"surface brightness ({_data_unit(exposure)})"
    )
    grid = (np.arange(left, right), np.arange(top, bottom))
    image_axis.contour(*grid, aperture[cut], levels=[0.5], colors="tab:orange", linewidths=1.2)
    handles = [Line2D([], [], color="tab:orange", label="source aperture")]
    if has_background:
        image_axis.contour(*grid, np.asarray(background)[cut], levels=[0.5], colors="tab:cyan",
                           linewidths=1.0)  # fmt: skip
        handles.append(Line2D([], [], color="tab:cyan", label="background regions"))
    image_axis.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=2,
                      fontsize=8, frameon=False, borderaxespad=0.0)  # fmt: skip
    spectrum_panels(flux_axis, error_axis, {"box FLUX": spectrum_arrays(products.x1d.spec[0])})
    figure.suptitle(title)
    return figure


def _residual_significance(exposure: LrsExposure, products, rows, columns) -> np.ndarray:
    """(data - scene) / sigma on the cutout, for the mean of the integrations."""
    model = exposure.model
    variance = sum(
        np.nan_to_num(np.asarray(getattr(model, name), dtype=float))
        for name in ("var_poisson", "var_rnoise", "var_flat")
        if model.hasattr(name) and getattr(model, name) is not None
    )
    variance = np.array(variance, dtype=float, ndmin=3)
    residual = products.residual[(slice(None), rows, columns)]
    count = np.sum(np.isfinite(residual), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_residual = nan_mean(residual, axis=0)
        mean_variance = nan_mean(variance[(slice(None), rows, columns)], axis=0)
        return mean_residual / np.sqrt(mean_variance / np.maximum(count, 1))


def optimal_figure(exposure: LrsExposure, products, title="LRS optimal extraction") -> Figure:
    """
    Data with the trace, residuals in sigma, the trace fit, the profile, and the spectrum.

    Parameters
    ----------
    exposure : LrsExposure
        The LRS input.
    products : OptimalProducts
        From :func:`mirispec_steps.lrs.optimal.extract_optimal`.
    title : str
        Figure title.

    Returns
    -------
    Figure
        The figure.

    Notes
    -----
    The residual panel shows ``(data - scene model) / sigma`` over the pixels
    the fit used (mean of the integrations for a time series): structure
    there means the PSF or background model does not describe the data.
    The trace panel shows the fitted offset from the WCS trace, with the
    local offsets it was fitted to when a polynomial was fitted; its scale
    is never narrower than +-0.1 px, so that numerical noise is not shown
    as a measurement. The profile panel shows the fitted source profile
    (measured from the data, or the reference's) and the ``psf`` file's at
    three wavelengths on a logarithmic scale.
    """
    rows, columns = products.slices
    data = _mean_image(products.data, exposure.dispaxis)
    cutout = data[rows, columns]
    significance = _residual_significance(exposure, products, rows, columns)
    extent = (columns.start - 0.5, columns.stop - 0.5, rows.start - 0.5, rows.stop - 0.5)
    whole = (slice(None), slice(None))

    figure, (data_axis, residual_axis, trace_axis, profile_axis), (flux_axis, error_axis) = _layout(
        [1.0, 1.0, 0.8, 1.1, 2.2], (20, 6.8)
    )
    _show_image(figure, data_axis, cutout, whole, extent, f"data ({_data_unit(exposure)})")
    data_axis.plot(products.trace, products.rows, "-", color="tab:orange", lw=0.8,
                   label="fitted trace")  # fmt: skip
    if products.shift is not None:
        nominal = products.trace - products.shift.shift
        data_axis.plot(nominal, products.rows, "--", color="tab:cyan", lw=0.8, label="WCS trace")
    legend_above(data_axis, ncol=1)

    _show_image(figure, residual_axis, significance, whole, extent, "(data - model) / sigma",
                cmap="RdBu_r", limits=(-5.0, 5.0))  # fmt: skip
    residual_axis.set_title(f"residual; {products.n_rejected} px rejected", fontsize=9)

    _trace_panel(trace_axis, products)
    _profile_panel(profile_axis, products)
    spectrum_panels(flux_axis, error_axis, {"optimal FLUX": spectrum_arrays(products.x1d.spec[0])})
    measured = products.profile_choice.kind == "empirical"
    how = "profile measured from the data" if measured else "profile of the PSF reference"
    figure.suptitle(f"{title} ({how})")
    return figure


def _profile_panel(axis, products) -> None:
    """The fitted profile and the reference's at three wavelengths, against the trace offset."""
    rows = np.flatnonzero(np.isfinite(products.row_wavelength) & np.isfinite(products.trace))
    columns = np.arange(products.slices[1].start, products.slices[1].stop, dtype=float)
    for colour, fraction in zip(("C0", "C1", "C3"), (0.15, 0.5, 0.85), strict=True):
        row = rows[int(fraction * (rows.size - 1))]
        offsets = columns - products.trace[row]
        wavelength = products.row_wavelength[row]
        axis.semilogy(offsets, np.clip(products.profile_cutout[row], 1e-6, None), "-",
                      color=colour, lw=1.2, label=f"fitted, {wavelength:.1f} um")  # fmt: skip
        axis.semilogy(offsets, np.clip(products.reference_cutout[row], 1e-6, None), "--",
                      color=colour, lw=0.9, label=f"PSF file, {wavelength:.1f} um")  # fmt: skip
    axis.set_ylim(1e-5, 1.0)
    axis.set_xlabel("offset from the trace (px)")
    axis.set_ylabel("profile (fraction of the flux per pixel)")
    legend_above(axis, ncol=2)


def _trace_panel(axis, products) -> None:
    """Fitted offset of the trace from the WCS per row, with the local offsets behind it."""
    axis.set_xlabel("trace offset from the WCS (px)")
    axis.set_ylabel("dispersion pixel")
    axis.set_ylim(products.rows[0] - 0.5, products.rows[-1] + 0.5)
    axis.ticklabel_format(axis="x", useOffset=False)
    if products.shift is None:
        axis.text(0.5, 0.5, "trace from the WCS\n(location not fitted)", ha="center",
                  va="center", transform=axis.transAxes, fontsize=9)  # fmt: skip
        axis.set_xlim(-0.5, 0.5)
        return
    solution = products.shift
    values = [solution.shift]
    if solution.block_rows.size:
        # Block centres are in the normalised row coordinate (-1..1).
        block_rows = np.interp(solution.block_rows, [-1.0, 1.0], products.rows[[0, -1]])
        axis.errorbar(solution.block_shifts, block_rows, xerr=solution.block_errors, fmt="o",
                      ms=2.5, color="0.45", ecolor="0.7", label="local offsets")  # fmt: skip
        values.append(solution.block_shifts)
    if solution.coefficients.size == 1:
        label = f"fitted global offset {float(solution.coefficients[0]):+.3f} px"
    else:
        label = f"fitted polynomial (order {solution.coefficients.size - 1})"
    axis.plot(solution.shift, products.rows, "-", color="tab:orange", lw=1.5, label=label)
    values = np.concatenate([np.atleast_1d(v) for v in values])
    centre = float(np.median(values))
    half = max(0.1, 1.2 * float(np.max(np.abs(values - centre))))
    axis.set_xlim(centre - half, centre + half)
    legend_above(axis, ncol=1)


def plot_lrs_box(exposure: LrsExposure, products, path, title="LRS box extraction") -> str:
    """Write :func:`box_figure` to the PNG ``path``; returns the path."""
    return save_figure(box_figure(exposure, products, title), path, dpi=90)


def plot_lrs_optimal(exposure: LrsExposure, products, path, title="LRS optimal extraction") -> str:
    """Write :func:`optimal_figure` to the PNG ``path``; returns the path."""
    return save_figure(optimal_figure(exposure, products, title), path, dpi=90)


def psf_figure(model, reference, title="LRS PSF measured by lrs_psf") -> Figure:
    """
    A new LRS ``psf`` reference against the one it replaces.

    Parameters
    ----------
    model : SpecPsfModel
        The new reference (from :class:`~mirispec_steps.lrs.psf_step.LrsPsfStep`).
    reference : PsfTable
        The reference it replaces.
    title : str
        Figure title.

    Returns
    -------
    Figure
        The figure.

    Notes
    -----
    Left: both profiles at three wavelengths, in pixels from the source, on a
    logarithmic scale (the wings matter as much as the core). Middle: the new
    profile minus the old one over wavelength and offset, in percent of each
    row's peak. Right: their FWHM against wavelength.
    """
    from mirispec_steps.lrs.core.psf_profile import evaluate_profile
    from mirispec_steps.lrs.psf_builder import profile_fwhm

    aperture = model.apertures[0]
    data, wave = np.asarray(aperture.data, float), np.asarray(aperture.wave, float)
    offsets = (np.arange(data.shape[1]) - aperture.center_col) / aperture.subpix
    old = evaluate_profile(reference, np.broadcast_to(offsets, data.shape), wave)
    figure = Figure(figsize=(16, 5.2), layout="constrained")
    profile_axis, difference_axis, width_axis = figure.subplots(
        1, 3, gridspec_kw={"width_ratios": [1.2, 1.3, 1.0]}
    )
    chosen = np.linspace(0.15, 0.85, 3)
    for colour, fraction in zip(("C0", "C1", "C3"), chosen, strict=True):
        index = int(fraction * (wave.size - 1))
        profile_axis.semilogy(offsets, np.clip(data[index], 1e-7, None), "-", color=colour,
                              lw=1.2, label=f"new, {wave[index]:.1f} um")  # fmt: skip
        profile_axis.semilogy(offsets, np.clip(old[index], 1e-7, None), "--", color=colour,
                              lw=0.9, label=f"replaced, {wave[index]:.1f} um")  # fmt: skip
    profile_axis.set_xlabel("offset from the source (px)")
    profile_axis.set_ylabel("pixel-integrated profile (fraction of the flux)")
    profile_axis.set_ylim(1e-6, 1.0)
    legend_above(profile_axis, ncol=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        difference = 100.0 * (data - old) / old.max(axis=1, keepdims=True)
    limit = max(float(np.nanpercentile(np.abs(difference), 99.5)), 0.1)
    shown = difference_axis.imshow(
        difference, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
        extent=(offsets[0], offsets[-1], wave[0], wave[-1]), interpolation="nearest",
    )  # fmt: skip
    figure.colorbar(shown, ax=difference_axis, label="new - replaced (% of the row's peak)")
    difference_axis.set_xlim(-12, 12)
    difference_axis.set_xlabel("offset from the source (px)")
    difference_axis.set_ylabel("wavelength (micron)")
    widths = np.array([[profile_fwhm(offsets, row) for row in table] for table in (data, old)])
    width_axis.plot(wave, widths[0], "-", color="C0", label="new")
    width_axis.plot(wave, widths[1], "--", color="0.3", label="replaced")
    width_axis.set_xlabel("wavelength (micron)")
    width_axis.set_ylabel("FWHM (px)")
    legend_above(width_axis, ncol=2)
    figure.suptitle(title)
    return figure


def plot_lrs_psf(model, reference, path, title="LRS PSF measured by lrs_psf") -> str:
    """Write :func:`psf_figure` to the PNG ``path``; returns the path."""
    return save_figure(psf_figure(model, reference, title), path, dpi=90)
