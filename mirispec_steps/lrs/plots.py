"""Diagnostic plots of the LRS extractions."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from mirispec_steps.core.robust import quiet_empty_slices
from mirispec_steps.lrs.exposure import LrsExposure, to_dispersion_major
from mirispec_steps.plots import new_figure, save_figure, spectrum_panel, stretch

__all__ = ["plot_lrs_box", "plot_lrs_optimal"]


def _dispersion_major_image(data: np.ndarray, dispaxis: int) -> np.ndarray:
    """The image (mean over integrations) with dispersion along the rows."""
    image = np.asarray(data, dtype=float)
    if image.ndim == 3:
        with quiet_empty_slices():  # never-valid pixels stay NaN
            image = np.nanmean(image, axis=0)
    return to_dispersion_major(image, dispaxis)


def plot_lrs_box(
    exposure: LrsExposure, products, path, title="LRS box extraction (mirispec_steps)"
):
    """
    The aperture and background regions over the 2-D image, and the extracted spectrum.

    Parameters
    ----------
    exposure : LrsExposure
        The LRS input (s2d, cal or calints; the mean of the integrations is shown).
    products : BoxProducts
        From :func:`mirispec_steps.lrs.box.extract_box`.
    path : str or Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.
    """
    image = _dispersion_major_image(exposure.model.data, exposure.dispaxis)
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

    figure, (image_axis, spectrum_axis) = new_figure(
        1, 2, figsize=(12, 6), gridspec_kw={"width_ratios": [1.0, 2.2]}
    )
    vmin, vmax = stretch(image[cut])
    image_axis.imshow(
        image[cut], origin="lower", aspect="auto", cmap="gray_r", vmin=vmin, vmax=vmax,
        extent=extent,
    )  # fmt: skip
    image_axis.contour(
        np.arange(left, right), np.arange(top, bottom), aperture[cut], levels=[1e-6],
        colors="tab:orange", linewidths=1.2,
    )  # fmt: skip
    handles = [Line2D([], [], color="tab:orange", label="source aperture")]
    if background is not None and np.any(background[cut] > 0):
        image_axis.contour(
            np.arange(left, right), np.arange(top, bottom), background[cut], levels=[1e-6],
            colors="tab:cyan", linewidths=1.0,
        )  # fmt: skip
        handles.append(Line2D([], [], color="tab:cyan", label="background regions"))
    image_axis.legend(handles=handles, fontsize=8, loc="upper right")
    image_axis.set_xlabel("cross-dispersion pixel")
    image_axis.set_ylabel("dispersion pixel")
    image_axis.set_title("aperture and background on the image", fontsize=10)
    spectrum_panel(spectrum_axis, products.x1d, "box FLUX")
    spectrum_axis.set_title("extracted spectrum", fontsize=10)
    return save_figure(figure, path, title, dpi=90)


def plot_lrs_optimal(
    exposure: LrsExposure, products, path, title="LRS optimal extraction (mirispec_steps)"
):
    """
    Trace and its fit, the data and residual images, and the extracted spectrum.

    Parameters
    ----------
    exposure : LrsExposure
        The LRS input.
    products : OptimalProducts
        From :func:`mirispec_steps.lrs.optimal.extract_optimal`.
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
    with quiet_empty_slices():  # rows with no valid pixel stay NaN
        cutout = np.nanmean(data[(slice(None), rows_slice, columns_slice)], axis=0)
        residual = np.nanmean(products.residual[(slice(None), rows_slice, columns_slice)], axis=0)
    # Residuals grow with the source's Poisson noise: scale to their own tail, not the sky's.
    finite_residual = np.abs(residual[np.isfinite(residual)])
    limit = float(np.percentile(finite_residual, 99)) if finite_residual.size else 1.0
    extent = (
        columns_slice.start - 0.5, columns_slice.stop - 0.5,
        rows_slice.start - 0.5, rows_slice.stop - 0.5,
    )  # fmt: skip

    figure, axes = new_figure(
        1, 4, figsize=(15, 6), gridspec_kw={"width_ratios": [1.0, 1.0, 1.0, 2.4]}
    )
    data_axis, residual_axis, trace_axis, spectrum_axis = axes
    vmin, vmax = stretch(cutout)
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

    spectrum_panel(spectrum_axis, products.x1d, "optimal FLUX")
    spectrum_axis.set_title("extracted spectrum", fontsize=10)
    return save_figure(figure, path, title, dpi=90)
