"""Diagnostic plots (matplotlib, no screen needed)."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_centroid",
    "plot_lrs_box",
    "plot_lrs_optimal",
    "plot_mrs_calibrated",
    "plot_mrs_extraction",
    "plot_spectrum",
    "plot_spectra",
]


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
    return _save(figure, path, title, dpi=90)


def plot_mrs_extraction(
    model, results, settings, path, plot_wavelength=None, title="MRS spectrum (mirispec_steps)"
):
    """
    MRS extraction diagnostics: per channel, the spectrum with errors and one bin on the detector.

    Parameters
    ----------
    model : IFUImageModel
        The calibrated exposure.
    results : list of ChannelSpectrum
        From :func:`mirispec_steps.mrs_extract.extract_channels`.
    settings : ExtractionSettings
        Method and aperture.
    path : str or Path
        PNG file to write.
    plot_wavelength : float or None
        Wavelength of the bin drawn on the detector (None: mid-band of each channel).
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.

    Notes
    -----
    The right panels show the detector rows around the chosen bin, with the
    bin's pixels marked by their aperture weight (the exact overlap of the
    pixel footprint with the aperture; for optimal extraction the aperture
    of ``radius`` is drawn for reference) and the source position's pixels.
    """
    from mirispec_steps.core.ellipse_overlap import EllipticalAperture, ellipse_overlap
    from mirispec_steps.core.spectral_grid import bin_members
    from mirispec_steps.mrs_extract import ARCSEC2_TO_SR

    figure, axes = plt.subplots(
        len(results), 2, figsize=(12, 3.6 * len(results)), squeeze=False,
        gridspec_kw={"width_ratios": [1.6, 1.0]},
    )  # fmt: skip
    for row, result in zip(axes, results, strict=True):
        spectrum, grid, geometry = result.spectrum, result.grid, result.geometry
        correction = (
            spectrum.aperture_correction
            if settings.method == "aperture" and settings.apply_apcorr
            else 1.0
        )
        flux = spectrum.flux * correction * ARCSEC2_TO_SR * 1e6
        error = spectrum.flux_error * np.abs(correction) * ARCSEC2_TO_SR * 1e6
        axis = row[0]
        axis.fill_between(grid.wavelength, flux - error, flux + error, color="0.75", lw=0)
        axis.plot(grid.wavelength, flux, "k-", lw=0.8, label=f"{settings.method} FLUX +- 1 sigma")
        axis.set_xlabel("wavelength (micron)")
        axis.set_ylabel("flux density (Jy)")
        finite = np.isfinite(flux)
        snr = np.nanmedian(flux[finite] / error[finite]) if finite.any() else np.nan
        axis.set_title(f"channel {geometry.name}: {len(grid)} bins, median SNR {snr:.0f}")
        axis.legend(fontsize=8, loc="best")

        target = np.mean(geometry.wavelength_range) if plot_wavelength is None else plot_wavelength
        chosen = int(np.argmin(np.abs(grid.wavelength - target)))
        members = bin_members(geometry.wavelength, grid)
        pixels = members.index[chosen][members.inside[chosen]]
        aperture = EllipticalAperture(
            result.semi_major[chosen], settings.axis_ratio, settings.position_angle
        )
        weight = ellipse_overlap(
            geometry.alpha_low[pixels],
            geometry.alpha_high[pixels],
            geometry.beta_low[pixels],
            geometry.beta_high[pixels],
            result.alpha[chosen],
            result.beta[chosen],
            aperture,
        )
        rows, columns = geometry.y[pixels], geometry.x[pixels]
        top, bottom = int(rows.min()) - 6, int(rows.max()) + 7
        left, right = int(geometry.x.min()), int(geometry.x.max()) + 1
        image = np.asarray(model.data[max(top, 0) : bottom, left:right], dtype=float)
        finite_image = image[np.isfinite(image)]
        low, high = np.percentile(finite_image, (1, 99.7)) if finite_image.size else (0, 1)
        axis = row[1]
        axis.imshow(
            image, origin="lower", aspect="auto", cmap="gray_r", vmin=low, vmax=high,
            extent=(left - 0.5, right - 0.5, max(top, 0) - 0.5, bottom - 0.5),
        )  # fmt: skip
        axis.scatter(columns, rows, s=2, c="tab:blue", alpha=0.4, label="bin pixels")
        inside = weight > 0
        marks = axis.scatter(
            columns[inside], rows[inside], s=14, c=weight[inside], cmap="autumn_r",
            vmin=0, vmax=1, marker="s", label="aperture weight",
        )  # fmt: skip
        figure.colorbar(marks, ax=axis, label="aperture overlap", fraction=0.05)
        axis.set_xlabel("detector column")
        axis.set_ylabel("detector row")
        axis.set_title(
            f"{geometry.name} bin at {grid.wavelength[chosen]:.4f} um; "
            f'aperture {result.semi_major[chosen]:.2f}" at '
            f"({result.alpha[chosen]:.2f}, {result.beta[chosen]:.2f})",
            fontsize=9,
        )
        axis.legend(fontsize=7, loc="upper right")
    return _save(figure, path, title, dpi=90)


def _save(figure, path, title: str, dpi: int) -> str:
    """Title, lay out, write and close a figure; return the path as a string."""
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return str(path)


def _stretch(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    """Display limits from percentiles of the finite values."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, (low, high))
    return float(vmin), float(vmax if vmax > vmin else vmin + 1.0)


def _spectrum_panel(axis, x1d, label: str) -> None:
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


def _dispersion_major_image(data: np.ndarray, dispaxis: int) -> np.ndarray:
    """The image (mean over integrations) with dispersion along the rows."""
    from mirispec_steps.adapters.lrs import to_dispersion_major

    image = np.asarray(data, dtype=float)
    if image.ndim == 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # never-valid pixels stay NaN
            image = np.nanmean(image, axis=0)
    return to_dispersion_major(image, dispaxis)


def plot_lrs_box(model, products, path, title="LRS box extraction (mirispec_steps)"):
    """
    The aperture and background regions over the 2-D image, and the extracted spectrum.

    Parameters
    ----------
    model : DataModel
        The LRS input (s2d, cal or calints; the mean of the integrations is shown).
    products : BoxProducts
        From :func:`mirispec_steps.lrs_box.extract_box`.
    path : str or Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.
    """
    from mirispec_steps.adapters.lrs import dispersion_axis

    image = _dispersion_major_image(model.data, dispersion_axis(model))
    aperture = np.asarray(products.aperture, dtype=float)
    aperture = aperture[0] if aperture.ndim == 3 else aperture
    background = products.background_region
    if background is not None:
        background = np.asarray(background, dtype=float)
        background = background[0] if background.ndim == 3 else background
    used = aperture > 0 if background is None else (aperture > 0) | (background > 0)
    rows, columns = np.nonzero(used)
    top, bottom = max(rows.min() - 5, 0), min(rows.max() + 6, image.shape[0])
    left, right = max(columns.min() - 8, 0), min(columns.max() + 9, image.shape[1])
    cut = (slice(top, bottom), slice(left, right))
    extent = (left - 0.5, right - 0.5, top - 0.5, bottom - 0.5)

    figure, (image_axis, spectrum_axis) = plt.subplots(
        1, 2, figsize=(12, 6), gridspec_kw={"width_ratios": [1.0, 2.2]}
    )
    vmin, vmax = _stretch(image[cut])
    image_axis.imshow(
        image[cut], origin="lower", aspect="auto", cmap="gray_r", vmin=vmin, vmax=vmax,
        extent=extent,
    )  # fmt: skip
    image_axis.contour(
        np.arange(left, right), np.arange(top, bottom), aperture[cut], levels=[1e-6],
        colors="tab:orange", linewidths=1.2,
    )  # fmt: skip
    handles = [plt.Line2D([], [], color="tab:orange", label="source aperture")]
    if background is not None and np.any(background[cut] > 0):
        image_axis.contour(
            np.arange(left, right), np.arange(top, bottom), background[cut], levels=[1e-6],
            colors="tab:cyan", linewidths=1.0,
        )  # fmt: skip
        handles.append(plt.Line2D([], [], color="tab:cyan", label="background regions"))
    image_axis.legend(handles=handles, fontsize=8, loc="upper right")
    image_axis.set_xlabel("cross-dispersion pixel")
    image_axis.set_ylabel("dispersion pixel")
    image_axis.set_title("aperture and background on the image", fontsize=10)
    _spectrum_panel(spectrum_axis, products.x1d, "box FLUX")
    spectrum_axis.set_title("extracted spectrum", fontsize=10)
    return _save(figure, path, title, dpi=90)


def plot_lrs_optimal(products, path, title="LRS optimal extraction (mirispec_steps)"):
    """
    Trace and its fit, the data and residual images, and the extracted spectrum.

    Parameters
    ----------
    products : OptimalProducts
        From :func:`mirispec_steps.lrs_optimal.extract_optimal`.
    path : str or Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.

    Notes
    -----
    The residual panel shows data - scene model over the pixels the fit
    used, scaled to the 99th percentile of its absolute value; the trace panel shows the
    local trace offsets the smooth fit was made from, with their errors.
    """
    rows_slice, columns_slice = products.slices
    data = np.asarray(products.data, dtype=float)
    data = data if data.ndim == 3 else data[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no valid pixel stay NaN
        cutout = np.nanmean(data[(slice(None), rows_slice, columns_slice)], axis=0)
        residual = np.nanmean(products.residual[(slice(None), rows_slice, columns_slice)], axis=0)
    # Residuals grow with the source's Poisson noise: scale to their own tail, not the sky's.
    finite_residual = np.abs(residual[np.isfinite(residual)])
    limit = float(np.percentile(finite_residual, 99)) if finite_residual.size else 1.0
    extent = (
        columns_slice.start - 0.5, columns_slice.stop - 0.5,
        rows_slice.start - 0.5, rows_slice.stop - 0.5,
    )  # fmt: skip

    figure, axes = plt.subplots(
        1, 4, figsize=(15, 6), gridspec_kw={"width_ratios": [1.0, 1.0, 1.0, 2.4]}
    )
    data_axis, residual_axis, trace_axis, spectrum_axis = axes
    vmin, vmax = _stretch(cutout)
    data_axis.imshow(
        cutout, origin="lower", aspect="auto", cmap="gray_r", vmin=vmin, vmax=vmax, extent=extent
    )
    data_axis.plot(products.trace, products.rows, "-", color="tab:orange", lw=1, label="trace")
    if products.shift is not None:
        nominal = products.trace - products.shift.shift
        data_axis.plot(nominal, products.rows, "--", color="tab:cyan", lw=0.8, label="WCS trace")
    data_axis.legend(fontsize=7, loc="upper right")
    data_axis.set_title("data and trace", fontsize=10)
    data_axis.set_xlabel("cross-dispersion pixel")
    data_axis.set_ylabel("dispersion pixel")

    limit = limit if limit > 0 else 1.0
    shown = residual_axis.imshow(
        residual, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
        extent=extent,
    )  # fmt: skip
    figure.colorbar(shown, ax=residual_axis, fraction=0.08, label="data - model")
    residual_axis.set_title(f"residual ({products.n_rejected} px rejected)", fontsize=10)
    residual_axis.set_xlabel("cross-dispersion pixel")

    if products.shift is not None:
        solution = products.shift
        if solution.block_rows.size:
            trace_axis.errorbar(
                solution.block_shifts, solution.block_rows, xerr=solution.block_errors,
                fmt=".", ms=3, color="0.4", label="local offsets",
            )  # fmt: skip
        trace_axis.plot(solution.shift, products.rows, "-", color="tab:orange", label="fit")
        trace_axis.legend(fontsize=7)
    else:
        trace_axis.text(0.5, 0.5, "trace from the WCS\n(not fitted)", ha="center",
                        transform=trace_axis.transAxes)  # fmt: skip
    trace_axis.set_xlabel("trace offset from the WCS (pixel)")
    trace_axis.set_ylim(rows_slice.start - 0.5, rows_slice.stop - 0.5)
    trace_axis.set_title("trace fit", fontsize=10)

    _spectrum_panel(spectrum_axis, products.x1d, "optimal FLUX")
    spectrum_axis.set_title("extracted spectrum", fontsize=10)
    return _save(figure, path, title, dpi=90)


def plot_mrs_calibrated(model, path, title="MRS calibrated exposure (mirispec_steps)"):
    """
    The calibrated detector image, its slice map and its signal-to-noise image.

    Parameters
    ----------
    model : IFUImageModel
        The output of MrsCalibrateStep (MJy/sr with ERR). The slice map needs
        a WCS; without one that panel is left out.
    path : str or Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.

    Notes
    -----
    The image uses an arcsinh-like (symmetric log) stretch, so that both the
    point source's peak and the faint sky between slices show.
    """
    from matplotlib.colors import SymLogNorm

    data = np.asarray(model.data, dtype=float)
    error = np.asarray(model.err, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(error > 0, data / error, np.nan)
    slice_map = _slice_map(model, data.shape)
    panels = 2 if slice_map is None else 3
    figure, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 6.2))
    finite = np.abs(data[np.isfinite(data)])
    scale = float(np.percentile(finite, 50)) if finite.size else 1.0
    _, top = _stretch(data, 1.0, 99.95)
    shown = axes[0].imshow(
        data, origin="lower", cmap="magma",
        norm=SymLogNorm(linthresh=max(scale, 1e-6), vmin=-scale, vmax=max(top, 2 * scale)),
    )  # fmt: skip
    figure.colorbar(shown, ax=axes[0], fraction=0.046, label=f"{model.meta.bunit_data}")
    instrument = model.meta.instrument
    axes[0].set_title(f"{instrument.detector} {instrument.band}: calibrated image", fontsize=10)
    if slice_map is not None:
        shown = axes[1].imshow(slice_map, origin="lower", cmap="tab20", interpolation="nearest")
        figure.colorbar(shown, ax=axes[1], fraction=0.046, label="slice number")
        axes[1].set_title("slice map (from the WCS)", fontsize=10)
    _, snr_top = _stretch(snr, 2.0, 99.9)
    shown = axes[-1].imshow(
        snr, origin="lower", cmap="viridis",
        norm=SymLogNorm(linthresh=3.0, vmin=-3.0, vmax=max(snr_top, 10.0)),
    )  # fmt: skip
    figure.colorbar(shown, ax=axes[-1], fraction=0.046, label="S/N (data / ERR)")
    usable = np.isfinite(snr)
    axes[-1].set_title(
        f"S/N: median {np.median(snr[usable]) if usable.any() else np.nan:.1f}, "
        f"max {np.max(snr[usable]) if usable.any() else np.nan:.0f} "
        f"({usable.sum()} usable pixels)",
        fontsize=10,
    )
    for axis in axes:
        axis.set_xlabel("detector column")
        axis.set_ylabel("detector row")
    return _save(figure, path, title, dpi=80)


def _slice_map(model, shape) -> np.ndarray | None:
    """Slice number of every pixel (NaN outside slices), or None without a WCS."""
    from mirispec_steps.adapters.mrs import mrs_geometry

    if getattr(model.meta, "wcs", None) is None:
        return None
    slice_map = np.full(shape, np.nan)
    for geometry in mrs_geometry(model):
        slice_map[geometry.y, geometry.x] = geometry.slice_number
    return slice_map
