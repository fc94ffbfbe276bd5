"""Diagnostic plots of the MRS steps: calibrated image, centroids, extraction."""

from __future__ import annotations

import numpy as np

from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.plots import new_figure, save_figure, stretch

__all__ = ["plot_centroid", "plot_mrs_calibrated", "plot_mrs_extraction"]


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
    figure, axes = new_figure(len(bands), 2, figsize=(11, 3.2 * len(bands)), squeeze=False)
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
    return save_figure(figure, path, title, dpi=90)


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
        From :func:`mirispec_steps.mrs.extract.extract_channels`.
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
    from mirispec_steps.mrs.core.ellipse_overlap import EllipticalAperture, ellipse_overlap
    from mirispec_steps.mrs.core.spectral_grid import bin_members
    from mirispec_steps.mrs.extract import ARCSEC2_TO_SR

    figure, axes = new_figure(
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
    return save_figure(figure, path, title, dpi=90)


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
    figure, axes = new_figure(1, panels, figsize=(6.2 * panels, 6.2))
    finite = np.abs(data[np.isfinite(data)])
    scale = float(np.percentile(finite, 50)) if finite.size else 1.0
    _, top = stretch(data, 1.0, 99.95)
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
    _, snr_top = stretch(snr, 2.0, 99.9)
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
    return save_figure(figure, path, title, dpi=80)


def _slice_map(model, shape) -> np.ndarray | None:
    """Slice number of every pixel (NaN outside slices), or None without a WCS."""
    if getattr(model.meta, "wcs", None) is None:
        return None
    slice_map = np.full(shape, np.nan)
    for geometry in mrs_geometry(model):
        slice_map[geometry.y, geometry.x] = geometry.slice_number
    return slice_map
