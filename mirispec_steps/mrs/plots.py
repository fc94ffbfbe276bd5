"""Diagnostic plots of the MRS steps: calibrated exposure, centroids, extraction.

Each figure is built by a ``*_figure`` function (returns a matplotlib Figure,
for notebooks and tests) and written by the matching ``plot_*``. Images of
the field are drawn in the (alpha, beta) plane from every pixel's footprint,
so what is shown is the sky as the slicer samples it; positions are in
milliarcseconds, spectra in the product's flux unit.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize, PowerNorm, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Ellipse

from mirispec_steps.core.robust import robust_sigma
from mirispec_steps.mrs.core.spectral_grid import bin_members
from mirispec_steps.mrs.exposure import has_wcs
from mirispec_steps.mrs.geometry import ChannelGeometry, mrs_geometry
from mirispec_steps.plots import edge_markers, legend_above, save_figure, spectrum_panels, stretch

__all__ = [
    "calibrated_figure",
    "centroid_figure",
    "extraction_figure",
    "plot_centroid",
    "plot_mrs_calibrated",
    "plot_mrs_extraction",
]

#: Detector rows shown around the middle of the band in the calibrated-image panels.
HALF_ROWS = 40


def _footprints(geometry: ChannelGeometry, pixels: np.ndarray) -> np.ndarray:
    """``(n, 4, 2)`` (alpha, beta) corners of the footprints of the given pixels."""
    a0, a1 = geometry.alpha_low[pixels], geometry.alpha_high[pixels]
    b0, b1 = geometry.beta_low[pixels], geometry.beta_high[pixels]
    return np.stack(
        [np.stack([a0, b0], -1), np.stack([a1, b0], -1), np.stack([a1, b1], -1),
         np.stack([a0, b1], -1)],
        axis=1,
    )  # fmt: skip


def _field_panel(figure, axis, geometry, pixels, values, label, norm, cmap="magma"):
    """Pixel footprints in (alpha, beta) coloured by ``values``, with a colour bar."""
    collection = PolyCollection(_footprints(geometry, pixels), array=values, cmap=cmap,
                                norm=norm, edgecolors="none")  # fmt: skip
    axis.add_collection(collection)
    axis.set_xlim(np.min(geometry.alpha_low), np.max(geometry.alpha_high))
    axis.set_ylim(np.min(geometry.beta_low), np.max(geometry.beta_high))
    axis.set_aspect("equal")
    axis.set_xlabel("alpha (arcsec)")
    axis.set_ylabel("beta (arcsec)")
    figure.colorbar(collection, ax=axis, label=label, shrink=0.85, pad=0.02)
    return collection


def _pixels_at(geometry: ChannelGeometry, wavelength: float) -> np.ndarray:
    """One pixel per slice column at a wavelength: those whose span contains it."""
    inside = (geometry.wavelength_low <= wavelength) & (geometry.wavelength_high > wavelength)
    return np.flatnonzero(inside)


def calibrated_figure(model, title="MRS calibrated exposure", maps=None) -> Figure:
    """
    Each channel at full resolution: detector rows at mid-band, and the field in surface
    brightness and S/N.

    Parameters
    ----------
    model : IFUImageModel
        The output of MrsCalibrateStep (MJy/sr with ERR).
    title : str
        Figure title.
    maps : str or None
        An ``mrsmaps`` file for data without a WCS; with neither, only the
        detector image is drawn.

    Returns
    -------
    Figure
        The figure.

    Notes
    -----
    Left: the detector rows around the middle of each channel's band, at
    one screen pixel per few detector pixels, with slice numbers on top
    (an arcsinh-like stretch shows the source's slices and the sky between
    them). Middle and right: the field at that wavelength, every pixel drawn
    as its footprint in (alpha, beta): where the source is, and how well
    each pixel measures it.
    """
    data = np.asarray(model.data, dtype=float)
    error = np.asarray(model.err, dtype=float)
    unit = str(model.meta.bunit_data or "data units")
    if not has_wcs(model) and maps is None:
        return _detector_only_figure(data, unit, title)
    geometries = mrs_geometry(model, maps=maps)
    figure = Figure(figsize=(17, 4.6 * len(geometries)), layout="constrained")
    axes = figure.subplots(len(geometries), 3, squeeze=False,
                           gridspec_kw={"width_ratios": [2.4, 1.0, 1.0]})  # fmt: skip
    for row, geometry in zip(axes, geometries, strict=True):
        middle = float(np.median(geometry.wavelength))
        centre_row = int(np.median(geometry.y[np.abs(geometry.wavelength - middle) < 0.002]))
        low, high = max(centre_row - HALF_ROWS, 0), min(centre_row + HALF_ROWS, data.shape[0])
        left, right = int(geometry.x.min()), int(geometry.x.max()) + 1
        cutout = data[low:high, left:right]
        scale = max(float(np.nanpercentile(np.abs(cutout), 50)), 1e-6)
        norm = SymLogNorm(
            linthresh=scale, vmin=-scale, vmax=max(stretch(cutout, 1, 99.9)[1], 2 * scale)
        )
        shown = row[0].imshow(cutout, origin="lower", aspect="auto", cmap="magma", norm=norm,
                              extent=(left - 0.5, right - 0.5, low - 0.5, high - 0.5),
                              interpolation="nearest")  # fmt: skip
        figure.colorbar(shown, ax=row[0], label=f"surface brightness ({unit})", pad=0.01)
        row[0].set_xlabel("detector column")
        row[0].set_ylabel("detector row")
        _slice_ticks(row[0], geometry)
        row[0].set_title(f"channel {geometry.name}: rows around {middle:.3f} um", fontsize=10)

        pixels = _pixels_at(geometry, middle)
        values = data[geometry.y[pixels], geometry.x[pixels]]
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = values / error[geometry.y[pixels], geometry.x[pixels]]
        peak = max(float(np.nanmax(values)) if np.any(np.isfinite(values)) else 1.0, 1e-6)
        field_scale = max(float(np.nanmedian(np.abs(values))), 1e-3 * peak)
        _field_panel(figure, row[1], geometry, pixels, values, f"surface brightness ({unit})",
                     SymLogNorm(linthresh=field_scale, vmin=-field_scale, vmax=peak))  # fmt: skip
        row[1].set_title(f"field at {middle:.3f} um", fontsize=10)
        top_snr = max(float(np.nanmax(snr)) if np.any(np.isfinite(snr)) else 10.0, 10.0)
        snr_norm = SymLogNorm(linthresh=3.0, vmin=-3.0, vmax=top_snr)
        _field_panel(figure, row[2], geometry, pixels, snr, "S/N (data / ERR)", snr_norm,
                     cmap="viridis")  # fmt: skip
        row[2].set_title(f"S/N at {middle:.3f} um (max {top_snr:.0f})", fontsize=10)
    figure.suptitle(f"{title}: {model.meta.instrument.detector} {model.meta.instrument.band}")
    return figure


def _detector_only_figure(data, unit, title) -> Figure:
    """The whole detector, when nothing says where the slices are (no WCS, no mrsmaps)."""
    figure = Figure(figsize=(9, 8), layout="constrained")
    axis = figure.subplots()
    scale = max(float(np.nanpercentile(np.abs(data), 50)), 1e-6)
    norm = SymLogNorm(linthresh=scale, vmin=-scale, vmax=max(stretch(data, 1, 99.9)[1], 2 * scale))
    shown = axis.imshow(data, origin="lower", cmap="magma", norm=norm, interpolation="nearest")
    figure.colorbar(shown, ax=axis, label=f"surface brightness ({unit})")
    axis.set_xlabel("detector column")
    axis.set_ylabel("detector row")
    figure.suptitle(f"{title} (no WCS: slices and field not drawn)")
    return figure


def _slice_ticks(axis, geometry: ChannelGeometry) -> None:
    """Slice numbers (integers) above a detector panel, at each slice's median column."""
    numbers = np.unique(geometry.slice_number)
    centres = np.array([np.median(geometry.x[geometry.slice_number == n]) for n in numbers])
    top = axis.secondary_xaxis("top")
    step = 1 if numbers.size <= 12 else 2
    order = np.argsort(centres)[::step]
    top.set_xticks(centres[order], [str(int(n)) for n in numbers[order]], fontsize=7)
    top.set_xlabel("slice", fontsize=8)


def centroid_figure(table, title="MRS source position per spectral bin") -> Figure:
    """
    Centroid versus wavelength with the smooth track, per band: alpha and beta in mas.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`mirispec_steps.read_centroid`.
    title : str
        Figure title.

    Returns
    -------
    Figure
        The figure.

    Notes
    -----
    The vertical scale follows the good bins (their spread and errors);
    bins flagged as outliers that fall beyond it are drawn on the edge as
    triangles and counted in the title, so that they cannot squash the scale.
    """
    bands = list(dict.fromkeys(np.asarray(table["band"]).tolist()))
    figure = Figure(figsize=(12, 3.4 * len(bands)), layout="constrained")
    axes = figure.subplots(len(bands), 2, squeeze=False)
    for row, band in zip(axes, bands, strict=True):
        rows = table[table["band"] == band]
        wavelength = np.asarray(rows["wavelength"], dtype=float)
        status = np.asarray(rows["status"]).astype(str)
        for axis, name in zip(row, ("alpha", "beta"), strict=True):
            _centroid_panel(axis, wavelength, status, rows, name, band)
    figure.suptitle(title)
    return figure


def _centroid_panel(axis, wavelength, status, rows, name, band) -> None:
    value = np.asarray(rows[name], dtype=float) * 1e3
    error = np.asarray(rows[f"{name}_err"], dtype=float) * 1e3
    track = np.asarray(rows[f"{name}_smooth"], dtype=float) * 1e3
    ok = status == "ok"
    low_signal = status == "low_signal"
    if np.any(ok):
        centre = float(np.median(value[ok]))
        spread = 4.0 * max(float(robust_sigma(value[ok])), float(np.median(error[ok])), 0.05)
        limits = (centre - spread, centre + spread)
    else:
        limits = (float(np.nanmin(track)) - 50.0, float(np.nanmax(track)) + 50.0)
    for chosen, colour, label in ((ok, "tab:blue", "ok"), (low_signal, "tab:orange", "low signal")):
        if np.any(chosen):
            axis.errorbar(wavelength[chosen], value[chosen], yerr=error[chosen], fmt=".", ms=2.5,
                          color=colour, ecolor="0.75", elinewidth=0.6, zorder=1,
                          label=f"{label} ({np.count_nonzero(chosen)})")  # fmt: skip
    outlier = status == "outlier"
    beyond = np.zeros(outlier.shape, dtype=bool)
    beyond[outlier] = edge_markers(
        axis, wavelength[outlier], value[outlier], limits, "tab:red", size=5
    )
    inside = outlier & ~beyond
    if np.any(inside):
        axis.plot(wavelength[inside], value[inside], "x", color="tab:red", ms=4, zorder=2,
                  label=f"outlier ({np.count_nonzero(inside)})")  # fmt: skip
    axis.plot(wavelength, track, "-", color="black", lw=2.0, zorder=3, label="smooth track")
    axis.set_ylim(*limits)
    axis.set_xlabel("wavelength (micron)")
    axis.set_ylabel(f"{name} (mas)")
    failed = int(np.count_nonzero(status == "failed"))
    notes = [f"{band} {name}"]
    if np.any(beyond):
        notes.append(f"{np.count_nonzero(beyond)} outliers beyond the axis (triangles)")
    if failed:
        notes.append(f"{failed} failed bins")
    axis.set_title("; ".join(notes), fontsize=9, loc="right")
    legend_above(axis, ncol=4)


def extraction_figure(model, results, settings, plot_wavelength=None,
                      title="MRS point-source spectra") -> Figure:  # fmt: skip
    """
    Per channel: the spectrum with its errors, and the pixels of one bin in the field.

    Parameters
    ----------
    model : IFUImageModel
        The calibrated exposure.
    results : list of ChannelSpectrum
        From :func:`mirispec_steps.mrs.extract.extract_channels`.
    settings : ExtractionSettings
        Method and aperture.
    plot_wavelength : float or None
        Wavelength of the bin drawn in the field (None: mid-band of each channel).
    title : str
        Figure title.

    Returns
    -------
    Figure
        The figure.

    Notes
    -----
    Right: the footprints of the chosen bin's pixels in (alpha, beta),
    coloured by what each contributes. Aperture photometry: the exact
    overlap of the footprint with the ellipse (drawn). Optimal extraction:
    the share of the PSF falling on the footprint, for the pixels the fit
    used (a circle of the PSF's FWHM is drawn). The cross marks the source
    position used for the bin.
    """
    from mirispec_steps.mrs.core.ellipse_overlap import EllipticalAperture, ellipse_overlap
    from mirispec_steps.mrs.extract import ARCSEC2_TO_SR

    figure = Figure(figsize=(14, 4.6 * len(results)), layout="constrained")
    grid = figure.add_gridspec(2 * len(results), 2, width_ratios=[1.7, 1.0],
                               height_ratios=[3, 1.2] * len(results))  # fmt: skip
    aperture_method = settings.method == "aperture"
    for index, result in enumerate(results):
        flux_axis = figure.add_subplot(grid[2 * index, 0])
        error_axis = figure.add_subplot(grid[2 * index + 1, 0], sharex=flux_axis)
        field_axis = figure.add_subplot(grid[2 * index : 2 * index + 2, 1])
        spec = _spec_of(result, settings, ARCSEC2_TO_SR)
        spectrum_panels(flux_axis, error_axis, {f"{settings.method} FLUX": spec})
        used = "PSF calibrated on the exposure" if result.psf_choice.used == "empirical" \
            else "reference PSF"  # fmt: skip
        flux_axis.set_title(f"channel {result.geometry.name}: {len(result.grid)} bins, median S/N "
                            f"{np.nanmedian(spec.flux / spec.error):.0f}; {used}", fontsize=10,
                            loc="left", pad=20)  # fmt: skip

        geometry, grid_bins = result.geometry, result.grid
        target = np.mean(geometry.wavelength_range) if plot_wavelength is None else plot_wavelength
        chosen = int(np.argmin(np.abs(grid_bins.wavelength - target)))
        members = bin_members(geometry.wavelength, grid_bins)
        pixels = members.index[chosen][members.inside[chosen]]
        alpha, beta = float(result.alpha[chosen]), float(result.beta[chosen])
        if aperture_method:
            aperture = EllipticalAperture(result.semi_major[chosen], settings.axis_ratio,
                                          settings.position_angle)  # fmt: skip
            weight = ellipse_overlap(
                geometry.alpha_low[pixels], geometry.alpha_high[pixels],
                geometry.beta_low[pixels], geometry.beta_high[pixels], alpha, beta, aperture,
            )  # fmt: skip
            label = "overlap with the aperture"
            norm = Normalize(0.0, 1.0)
        else:
            psf = result.psf
            weight = psf.footprint_fraction(
                geometry.alpha_low[pixels], geometry.alpha_high[pixels],
                geometry.beta_low[pixels], geometry.beta_high[pixels], alpha, beta,
                geometry.wavelength[pixels],
            )  # fmt: skip
            label = "share of the PSF on the pixel"
            if np.any(weight < 0):
                # A calibrated PSF's far wings may dip below zero: drawn, at the scale's bottom.
                label += " (below 0 shown as 0)"
            # A square-root stretch, so that the wings the fit also uses stay visible.
            norm = PowerNorm(0.5, 0.0, max(float(np.max(weight)), 1e-6))
        if aperture_method:
            near = weight > 0
        else:
            near = np.abs(weight) > 1e-4 * np.max(weight)
            weight = np.clip(weight, 0.0, None)
        _field_panel(figure, field_axis, geometry, pixels[near], weight[near], label, norm,
                     cmap="viridis")  # fmt: skip
        field_axis.plot(alpha, beta, "+", color="tab:red", ms=6, mew=1.0, label="source position")
        if aperture_method:
            field_axis.add_patch(Ellipse((alpha, beta), 2 * aperture.semi_major,
                                         2 * aperture.semi_major * settings.axis_ratio,
                                         angle=settings.position_angle, fill=False,
                                         color="tab:red", lw=1.2, label="aperture"))  # fmt: skip
            caption = f"aperture a = {float(result.semi_major[chosen]):.2f} arcsec"
        else:
            fwhm = float(result.psf.fwhm(grid_bins.wavelength[chosen]))
            field_axis.add_patch(Circle((alpha, beta), fwhm / 2, fill=False, color="tab:red",
                                        lw=1.5, ls="--", label="PSF FWHM"))  # fmt: skip
            caption = "optimal: PSF-weighted fit"
        field_axis.set_title(
            f"{geometry.name} bin at {grid_bins.wavelength[chosen]:.4f} um; {caption}\nsource "
            f"at ({alpha * 1e3:.0f}, {beta * 1e3:.0f}) mas", fontsize=9, loc="left", pad=20,
        )  # fmt: skip
        legend_above(field_axis, ncol=2)
    figure.suptitle(title)
    return figure


def _spec_of(result, settings, arcsec2_to_sr):
    """The channel's spectrum in Jy, as the x1d writes it (aperture correction applied)."""
    from mirispec_steps.plots import SpectrumArrays

    spectrum = result.spectrum
    correction = spectrum.aperture_correction if settings.method == "aperture" and \
        settings.apply_apcorr else 1.0  # fmt: skip
    flux = spectrum.flux * correction * arcsec2_to_sr * 1e6
    error = spectrum.flux_error * np.abs(correction) * arcsec2_to_sr * 1e6
    return SpectrumArrays(result.grid.wavelength, flux, error, "Jy")


def plot_mrs_calibrated(model, path, title="MRS calibrated exposure", maps=None) -> str:
    """Write :func:`calibrated_figure` to a PNG; returns the path."""
    return save_figure(calibrated_figure(model, title, maps), path, dpi=80)


def plot_centroid(table, path, title="MRS source position per spectral bin") -> str:
    """Write :func:`centroid_figure` to a PNG; returns the path."""
    return save_figure(centroid_figure(table, title), path, dpi=90)


def plot_mrs_extraction(model, results, settings, path, plot_wavelength=None,
                        title="MRS point-source spectra") -> str:  # fmt: skip
    """Write :func:`extraction_figure` to a PNG; returns the path."""
    figure = extraction_figure(model, results, settings, plot_wavelength, title)
    return save_figure(figure, path, dpi=90)


def mrs_psf_figure(results: dict, title: str = "MRS PSF measured on a point source") -> Figure:
    """
    Each band's measured PSF: image, profiles against the reference, and their difference.

    Parameters
    ----------
    results : dict
        Band to :class:`~mirispec_steps.mrs.psf_builder.BandPsf`.
    title : str
        Figure title.

    Returns
    -------
    Figure
        One row per band, at the band's middle wavelength: the measured
        PSF (log stretch, arcsec); cuts along alpha and beta through the
        centre, measured and reference, in units of the measured peak (log);
        and measured minus reference in units of the measured peak.
    """
    from mirispec_steps.mrs.psf_builder import psf_plane

    bands = sorted(results)
    figure = Figure(figsize=(13.5, 3.6 * len(bands)))
    axes = figure.subplots(len(bands), 3, squeeze=False)
    for row, band in zip(axes, bands, strict=True):
        result = results[band]
        wavelength = float(np.mean(result.wavelength_range))
        width = float(result.psf.fwhm(wavelength))
        centres, measured = psf_plane(result.psf, wavelength, 4.0 * width, width / 8)
        _, reference = psf_plane(result.psf.reference, wavelength, 4.0 * width, width / 8)
        peak = measured.max()
        extent = (centres[0], centres[-1], centres[0], centres[-1])
        image_axis, cut_axis, difference_axis = row
        shown = image_axis.imshow(
            np.clip(measured / peak, 1e-4, None), origin="lower", extent=extent, cmap="magma",
            norm=SymLogNorm(linthresh=1e-4, vmin=1e-4, vmax=1.0),
        )  # fmt: skip
        figure.colorbar(shown, ax=image_axis, label="density / peak")
        image_axis.set_xlabel("alpha (arcsec)")
        image_axis.set_ylabel("beta (arcsec)")
        image_axis.set_title(
            f"{band}: measured PSF at {wavelength:.2f} um\n{result.n_exposures} exposure(s)",
            fontsize=9, loc="left",
        )  # fmt: skip
        middle = centres.size // 2
        for values, label, style in ((measured, "measured", "-"), (reference, "reference", ":")):
            cut_axis.semilogy(centres, np.clip(values[middle] / peak, 1e-5, None), style,
                              color="tab:blue", label=f"along alpha, {label}")  # fmt: skip
            cut_axis.semilogy(centres, np.clip(values[:, middle] / peak, 1e-5, None), style,
                              color="tab:orange", label=f"along beta, {label}")  # fmt: skip
        cut_axis.set_xlabel("offset from the source (arcsec)")
        cut_axis.set_ylabel("density / measured peak")
        cut_axis.set_ylim(1e-5, 2.0)
        legend_above(cut_axis, ncol=2)
        limit = float(np.max(np.abs(measured - reference)) / peak) or 1e-3
        shown = difference_axis.imshow(
            (measured - reference) / peak, origin="lower", extent=extent, cmap="RdBu_r",
            norm=Normalize(-limit, limit),
        )  # fmt: skip
        figure.colorbar(shown, ax=difference_axis, label="(measured - reference) / peak")
        difference_axis.set_xlabel("alpha (arcsec)")
        difference_axis.set_title("measured minus reference", fontsize=9, loc="left")
    figure.suptitle(title)
    return figure


def plot_mrs_psf(results: dict, path, title="MRS PSF measured on a point source") -> str:
    """Write :func:`mrs_psf_figure` to a PNG; returns the path."""
    return save_figure(mrs_psf_figure(results, title), path, dpi=90)


def mrs_combination_figure(output, combined: dict, spectra: dict) -> Figure:
    """
    A combined, stitched MRS spectrum, its corrections and its dithers.

    Parameters
    ----------
    output : MRSMultiSpecModel
        ``mrs_combine``'s product (the stitched spectrum first).
    combined : dict
        Band to :class:`~mirispec_steps.mrs.core.combine.CombinedBand`.
    spectra : dict
        Band to :class:`~mirispec_steps.mrs.combine.BandSpectra` (the dithers).

    Returns
    -------
    Figure
        Top: the stitched spectrum (Jy) with its 1-sigma band, its
        residual-fringe-corrected version (RF_FLUX) and the band overlaps
        shaded. Middle: the corrections in percent of the flux, the
        residual-fringe factor per band and the 1B leak removed from 3A.
        Bottom: each dither's spectrum over the combination of its band
        (RF_FLUX when fitted, before the leak correction, smoothed over 15
        bins so that systematic differences show), excluded dithers dashed.
    """
    figure = Figure(figsize=(13.0, 9.5))
    top, middle, bottom = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.6, 2)}
    )
    table = output.spec[0].spec_table
    columns = ("WAVELENGTH", "FLUX", "FLUX_ERROR", "RF_FLUX")
    wavelength, flux, error, rf_flux = (np.array(table[name], dtype=float) for name in columns)
    # Gaps between bands (1B-2A ...) are drawn as gaps, not bridged.
    step = np.diff(wavelength)
    gaps = np.flatnonzero(step > 20 * np.median(step)) + 1
    wavelength, flux, error, rf_flux = (np.insert(values, gaps, np.nan) for values in
                                        (wavelength, flux, error, rf_flux))  # fmt: skip
    top.fill_between(wavelength, flux - error, flux + error, color="0.75", lw=0,
                     label="1-sigma")  # fmt: skip
    top.plot(wavelength, flux, color="k", lw=0.6, label="FLUX (stitched)")
    if np.any(np.isfinite(rf_flux)):
        top.plot(wavelength, rf_flux, color="tab:blue", lw=0.6, label="RF_FLUX (fringes removed)")
    names = sorted(combined, key=lambda name: combined[name].wavelength[0])
    for first, second in zip(names[:-1], names[1:], strict=True):
        low, high = combined[second].wavelength[0], combined[first].wavelength[-1]
        if low < high:
            for axis in (top, middle, bottom):
                axis.axvspan(low, high, color="tab:orange", alpha=0.2, lw=0)
    top.axvspan(np.nan, np.nan, color="tab:orange", alpha=0.2, label="band overlaps")
    top.set_ylabel("flux density (Jy)")
    if np.nanmin(flux) > 0:
        # A continuum that changes by decades across 5-28 micron stays readable in every band.
        top.set_yscale("log")
    legend_above(top, ncol=4)
    # A label for the first curve of each kind only.
    fringe_label, leak_label = "RF_FLUX / FLUX - 1", "1B leak removed from 3A"
    for band in names:
        result = combined[band]
        with np.errstate(divide="ignore", invalid="ignore"):
            if result.rf_flux is not None:
                middle.plot(result.wavelength, 100 * (result.rf_flux / result.flux - 1),
                            color="tab:blue", lw=0.5,
                            label=fringe_label)  # fmt: skip
                fringe_label = None
            if result.leak is not None:
                middle.plot(result.wavelength, -100 * result.leak / (result.flux + result.leak),
                            color="tab:red", lw=1.0,
                            label=leak_label)  # fmt: skip
                leak_label = None
    middle.axhline(0.0, color="k", lw=0.5)
    middle.set_ylabel("correction (%)")
    if fringe_label is None or leak_label is None:
        legend_above(middle, ncol=2)
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:cyan"]
    labelled = set()
    kernel = np.ones(15) / 15
    for band, entry in spectra.items():
        result = combined[band]
        # The dithers as they were judged: without residual fringes when fitted.
        fringe_free = result.rf_flux is not None and np.any(np.isfinite(entry.rf_flux))
        dithers, mean = (
            (entry.rf_flux, result.rf_flux) if fringe_free else (entry.flux, result.flux)
        )
        reference = mean if result.leak is None else mean + result.leak
        for index, check in enumerate(result.checks):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = dithers[index] / reference
            finite = np.isfinite(ratio)
            # A running mean over the bins with data (no padding pulls the band ends down).
            with np.errstate(divide="ignore", invalid="ignore"):
                smooth = np.convolve(np.where(finite, ratio, 0.0), kernel, mode="same") / (
                    np.convolve(finite.astype(float), kernel, mode="same")
                )
            smooth[~finite] = np.nan
            label = f"dither {index + 1} of its band" if index not in labelled else None
            labelled.add(index)
            bottom.plot(entry.wavelength, 100 * (smooth - 1), lw=0.7,
                        color=colours[index % len(colours)],
                        ls="--" if check.excluded else "-", label=label)  # fmt: skip
    bottom.axhline(0.0, color="k", lw=0.5)
    bottom.set_ylabel("dither / combined - 1 (%)\n(RF_FLUX, 15-bin mean)")
    bottom.set_xlabel("wavelength (micron)")
    legend_above(bottom, ncol=6)
    # How many per band (the products are named in the log and the record).
    excluded = [
        f"{band}: {count}"
        for band in names
        if (count := sum(check.excluded for check in combined[band].checks))
    ]
    figure.suptitle(
        "MRS dithers combined and bands stitched"
        + (f" (dithers left out, dashed: {', '.join(excluded)})" if excluded else ""),
        fontsize=10,
    )
    return figure


def plot_mrs_combination(output, combined: dict, spectra: dict, path) -> str:
    """Write :func:`mrs_combination_figure` to a PNG; returns the path."""
    return save_figure(mrs_combination_figure(output, combined, spectra), path, dpi=90)
