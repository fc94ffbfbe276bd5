"""Diagnostic plots (matplotlib, no screen needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_centroid", "plot_mrs_extraction", "plot_spectrum", "plot_spectra"]


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
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return str(path)
