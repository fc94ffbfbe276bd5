"""
Every step's diagnostic plot: a real PNG named like the product, and a figure a scientist can read.

The steps run for real and write their PNGs; the figures they draw are also
captured on their way to the file (``save_figure`` is wrapped, not replaced)
so that their content can be checked: axis labels with units, a labelled
colour bar for every image, legends outside the data, honest titles and
scales.
"""

import matplotlib.patches
import numpy as np
import pytest
from astropy.table import Table
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.image import AxesImage, imread

import mirispec_steps.plots
from mirispec_steps import (
    LrsBoxExtractStep,
    LrsOptimalExtractStep,
    MrsCalibrateStep,
    MrsCentroidStep,
    MrsExtractStep,
)
from mirispec_steps.mrs.plots import centroid_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """Figures the steps save, by file name (they are still written)."""
    figures = {}
    save = mirispec_steps.plots.save_figure

    def capture(figure, path, *args, **kwargs):
        written = save(figure, path, *args, **kwargs)
        figures[str(path).rsplit("/", 1)[-1]] = figure
        return written

    for module in ("mirispec_steps.plots", "mirispec_steps.lrs.plots", "mirispec_steps.mrs.plots"):
        monkeypatch.setattr(f"{module}.save_figure", capture)
    return figures


def assert_png(path, min_size):
    """``path`` is a PNG of at least ``min_size`` (width, height) pixels, not blank."""
    with open(path, "rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (path, width, height)
    assert np.ptp(image[..., :3]) > 0.1, f"{path} is blank"
    return width, height


def colour_bar_axes(figure):
    return {axis for axis in figure.axes if hasattr(axis, "_colorbar")}


def data_axes(figure):
    return [axis for axis in figure.axes if axis not in colour_bar_axes(figure)]


def assert_readable(figure):
    """Labels on all axes, units on physical axes, bars for images, legends off the data."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    bars = colour_bar_axes(figure)
    for bar in bars:
        assert bar.get_ylabel() or bar.get_xlabel(), "a colour bar without a label"
    bar_mappables = {id(bar._colorbar.mappable) for bar in bars}
    for axis in data_axes(figure):
        # An upper panel sharing its x axis with a labelled panel below needs no label of its own.
        siblings = axis.get_shared_x_axes().get_siblings(axis)
        assert any(sibling.get_xlabel() for sibling in siblings), f"unlabelled x: {axis}"
        assert axis.get_ylabel(), f"unlabelled y axis: {axis.get_xlabel()}"
        for label in (axis.get_xlabel(), axis.get_ylabel()):
            if any(word in label for word in ("wavelength", "flux", "alpha", "beta", "offset")):
                assert "(" in label and ")" in label, f"no unit in {label!r}"
        for image in axis.get_images() + [
            collection for collection in axis.collections
            if isinstance(collection, PolyCollection) and collection.get_array() is not None
        ]:  # fmt: skip
            if isinstance(image, AxesImage | PolyCollection) and image.get_array() is not None:
                assert id(image) in bar_mappables, f"an image without a colour bar on {axis}"
        legend = axis.get_legend()
        if legend is not None:
            box, frame = legend.get_window_extent(renderer), axis.get_window_extent(renderer)
            overlap = min(box.y1, frame.y1) - max(box.y0, frame.y0)
            assert overlap <= 1.0, f"legend over the data of {axis.get_ylabel()!r}"


def test_lrs_box_plot(tmp_path, cal_nod_a, apcorr_file, drawn):
    model = cal_nod_a.model.copy()
    model.meta.filename = "jw02_lrs_cal.fits"
    LrsBoxExtractStep.call(
        model, override_apcorr=apcorr_file, save_plots=True, use_source_posn=True,
        output_dir=str(tmp_path),
    )  # fmt: skip
    width, height = assert_png(tmp_path / "jw02_lrs_box_x1d.png", min_size=(1000, 500))
    assert width > height
    figure = drawn["jw02_lrs_box_x1d.png"]
    assert_readable(figure)
    labels = {axis.get_ylabel() for axis in figure.axes}
    assert "flux density (mJy)" in labels
    assert "surface brightness (MJy/sr)" in labels
    legends = [text.get_text() for axis in figure.axes if axis.get_legend()
               for text in axis.get_legend().get_texts()]  # fmt: skip
    assert "source aperture" in legends


def test_lrs_optimal_plot_with_trace_fit(tmp_path, cal_nod_a, drawn):
    model = cal_nod_a.model.copy()
    model.meta.filename = "jw03_lrs_cal.fits"
    LrsOptimalExtractStep.call(model, fit_trace_order=1, save_plots=True, output_dir=str(tmp_path))
    assert_png(tmp_path / "jw03_lrs_optimal_x1d.png", min_size=(1300, 500))
    figure = drawn["jw03_lrs_optimal_x1d.png"]
    assert_readable(figure)
    assert "aperture" not in figure.get_suptitle()
    bars = {axis.get_ylabel() for axis in colour_bar_axes(figure)}
    assert "(data - model) / sigma" in bars
    (trace_axis,) = [a for a in figure.axes if a.get_xlabel() == "trace offset from the WCS (px)"]
    low, high = trace_axis.get_xlim()
    # Never narrower than +-0.1 px, and the fitted offset is inside it.
    assert high - low >= 0.2
    offsets = np.concatenate([line.get_xdata() for line in trace_axis.get_lines()])
    assert np.all((offsets >= low) & (offsets <= high))


@pytest.fixture(scope="module")
def calibrated_mrs(tmp_path_factory):
    from conftest import _simulate_mrs_files

    folder = tmp_path_factory.mktemp("mrs_plots")
    _, files = _simulate_mrs_files(folder, seed=31)
    return folder, files


def test_mrs_calibrate_plot(calibrated_mrs, tmp_path, drawn):
    folder, files = calibrated_mrs
    MrsCalibrateStep.call(
        files["rate"], background=files["background"], override_photom=files["photom"],
        override_fringe=files["fringe"], save_plots=True, output_dir=str(tmp_path),
    )  # fmt: skip
    stem = files["rate"].rsplit("/", 1)[1].replace("_rate.fits", "")
    assert_png(tmp_path / f"{stem}_mrscal.png", min_size=(1200, 450))
    figure = drawn[f"{stem}_mrscal.png"]
    assert_readable(figure)
    bar_labels = [axis.get_ylabel() for axis in colour_bar_axes(figure)]
    assert "surface brightness (MJy/sr)" in bar_labels
    assert "S/N (data / ERR)" in bar_labels
    # The field panels are in arcsec, the detector panels in pixels.
    assert any(axis.get_xlabel() == "alpha (arcsec)" for axis in figure.axes)
    assert any(axis.get_xlabel() == "detector column" for axis in figure.axes)


@pytest.mark.parametrize("method", ["aperture", "optimal"])
def test_mrs_centroid_and_extract_plots(calibrated_mrs, tmp_path, drawn, method):
    folder, files = calibrated_mrs
    calibrated = MrsCalibrateStep.call(
        files["rate"], background=files["background"], override_photom=files["photom"],
        override_fringe=files["fringe"],
    )  # fmt: skip
    located = MrsCentroidStep.call(calibrated, save_plots=True, output_dir=str(tmp_path))
    MrsExtractStep.call(
        located, method=method, save_plots=True, output_dir=str(tmp_path), plot_wavelength=5.3,
    )  # fmt: skip
    stem = files["rate"].rsplit("/", 1)[1].replace("_rate.fits", "")
    assert_png(tmp_path / f"{stem}_centroid.png", min_size=(900, 500))
    assert_png(tmp_path / f"{stem}_{method}_x1d.png", min_size=(1000, 600))
    assert_readable(drawn[f"{stem}_centroid.png"])
    figure = drawn[f"{stem}_{method}_x1d.png"]
    assert_readable(figure)
    patches = [patch for axis in figure.axes for patch in axis.patches]
    if method == "aperture":
        assert any(isinstance(patch, matplotlib.patches.Ellipse) for patch in patches)
        assert "overlap with the aperture" in [a.get_ylabel() for a in colour_bar_axes(figure)]
    else:
        assert any(isinstance(patch, matplotlib.patches.Circle) for patch in patches)
        assert "share of the PSF on the pixel" in [a.get_ylabel() for a in colour_bar_axes(figure)]
    # The bin drawn is the one asked for.
    titles = " ".join(axis.get_title(loc="left") for axis in figure.axes)
    assert "bin at 5.3" in titles


def centroid_rows(outlier_alpha: float) -> Table:
    """One band of centroids near zero with one outlier bin at ``outlier_alpha`` arcsec."""
    rng = np.random.default_rng(4)
    n_bins = 60
    alpha = rng.normal(0.0, 0.002, n_bins)
    status = np.full(n_bins, "ok", dtype="<U10")
    alpha[30], status[30] = outlier_alpha, "outlier"
    return Table({
        "band": np.full(n_bins, "1A"), "wavelength": np.linspace(4.9, 5.7, n_bins),
        "alpha": alpha, "alpha_err": np.full(n_bins, 0.002), "alpha_smooth": np.zeros(n_bins),
        "beta": rng.normal(0.0, 0.002, n_bins), "beta_err": np.full(n_bins, 0.002),
        "beta_smooth": np.zeros(n_bins), "status": status,
    })  # fmt: skip


@pytest.mark.parametrize("outlier_alpha", [0.5, -3.0])
def test_centroid_scale_follows_the_good_bins(outlier_alpha):
    figure = centroid_figure(centroid_rows(outlier_alpha))
    assert_readable(figure)
    alpha_axis = figure.axes[0]
    low, high = alpha_axis.get_ylim()
    # The scale is a few mas (the good bins), not the outlier's hundreds.
    assert high - low < 50.0
    assert low < 0.0 < high
    assert "1 outliers beyond the axis" in alpha_axis.get_title(loc="right")
    edge = [line for line in alpha_axis.get_lines() if line.get_marker() in ("^", "v")]
    assert len(edge) == 1
    assert edge[0].get_marker() == ("^" if outlier_alpha > 0 else "v")


def test_centroid_outlier_inside_the_scale_is_a_cross():
    figure = centroid_figure(centroid_rows(0.004))
    alpha_axis = figure.axes[0]
    crosses = [line for line in alpha_axis.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert "beyond" not in alpha_axis.get_title(loc="right")


@pytest.mark.parametrize("with_truth", [False, True])
def test_spectrum_panel_shows_the_bins_its_scale_leaves_out(with_truth):
    """The lower panel's scale follows the bulk (99th percentile); two single bins far beyond
    it are drawn as triangles on its edge and counted above it, not cut off unseen."""
    from mirispec_steps.plots import SpectrumArrays, new_figure, spectrum_panels

    wavelength = np.linspace(5.0, 6.0, 400)
    rng = np.random.default_rng(2)
    flux = 10.0 + 0.01 * rng.standard_normal(wavelength.size)
    error = np.full(wavelength.size, 0.01)
    wild = [120, 300]
    if with_truth:
        flux[wild] = [13.0, 7.0]  # +30% and -30%
    else:
        error[wild] = 0.5  # a 5% error among 0.1% ones
    figure, (top, bottom) = new_figure(2, 1)
    spectrum_panels(
        top,
        bottom,
        {"FLUX": SpectrumArrays(wavelength, flux, error, "mJy")},
        (wavelength, np.full(wavelength.size, 10.0)) if with_truth else None,
    )
    low, high = bottom.get_ylim()
    assert high < (5.0 if not with_truth else 30.0)  # the scale is the bulk's
    markers = [line for line in bottom.lines if line.get_marker() in ("^", "v")]
    assert markers, "no off-scale markers"
    marked = np.sort(np.concatenate([line.get_xdata() for line in markers]))
    assert np.allclose(marked, wavelength[wild])
    texts = [text.get_text() for text in bottom.texts]
    assert any(text.startswith("2 bin(s) off scale") for text in texts), texts
