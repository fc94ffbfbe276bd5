"""Every step's diagnostic plot: a valid PNG of the expected size, named like the product."""

import numpy as np
import pytest
from matplotlib.image import imread

from mirispec_steps import (
    LrsBoxExtractStep,
    LrsOptimalExtractStep,
    MrsCalibrateStep,
    MrsCentroidStep,
    MrsExtractStep,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size):
    """``path`` is a PNG of at least ``min_size`` (width, height) pixels, not blank."""
    with open(path, "rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (path, width, height)
    # Something was drawn: the image is not a single colour.
    assert np.ptp(image[..., :3]) > 0.1, f"{path} is blank"
    return width, height


def call(step_class, *args, **parameters):
    return step_class.call(*args, **parameters)


def test_lrs_box_plot(tmp_path, cal_nod_a, apcorr_file):
    model = cal_nod_a.model.copy()
    model.meta.filename = "jw02_lrs_cal.fits"
    call(
        LrsBoxExtractStep, model, override_apcorr=apcorr_file, save_plots=True,
        use_source_posn=True, output_dir=str(tmp_path),
    )  # fmt: skip
    width, height = assert_png(tmp_path / "jw02_lrs_x1d.png", min_size=(1000, 500))
    assert width > height


def test_lrs_optimal_plot_with_trace_fit(tmp_path, cal_nod_a):
    model = cal_nod_a.model.copy()
    model.meta.filename = "jw03_lrs_cal.fits"
    call(
        LrsOptimalExtractStep, model, fit_trace_order=1, save_plots=True,
        output_dir=str(tmp_path),
    )  # fmt: skip
    assert_png(tmp_path / "jw03_lrs_x1d.png", min_size=(1300, 500))


@pytest.fixture(scope="module")
def calibrated_mrs(tmp_path_factory):
    from conftest import _simulate_mrs_files

    folder = tmp_path_factory.mktemp("mrs_plots")
    _, files = _simulate_mrs_files(folder, seed=31)
    calibrated = call(
        MrsCalibrateStep, files["rate"], background=files["background"],
        override_photom=files["photom"], override_fringe=files["fringe"], save_plots=True,
        output_dir=str(folder),
    )  # fmt: skip
    return folder, files, calibrated


def test_mrs_calibrate_plot(calibrated_mrs):
    folder, files, _ = calibrated_mrs
    stem = files["rate"].rsplit("/", 1)[1].replace("_rate.fits", "")
    assert_png(folder / f"{stem}_mrscal.png", min_size=(1200, 450))


def test_mrs_centroid_and_extract_plots(calibrated_mrs, tmp_path):
    _, files, calibrated = calibrated_mrs
    located = call(MrsCentroidStep, calibrated, save_plots=True, output_dir=str(tmp_path))
    call(
        MrsExtractStep, located, method="aperture", save_plots=True, output_dir=str(tmp_path),
        plot_wavelength=5.3,
    )  # fmt: skip
    stem = files["rate"].rsplit("/", 1)[1].replace("_rate.fits", "")
    assert_png(tmp_path / f"{stem}_centroid.png", min_size=(900, 500))
    assert_png(tmp_path / f"{stem}_x1d.png", min_size=(1000, 600))
