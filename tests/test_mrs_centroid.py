"""MrsCentroidStep: spectral grid, staged fits, accuracy, robustness, honesty, usage, bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_honest_pulls, calibrated_mrs
from numpy.testing import assert_allclose
from scipy.optimize import curve_fit

from mirispec_steps import MrsCentroidStep, read_centroid
from mirispec_steps.core import batched_fit
from mirispec_steps.core.batched_fit import BatchedFit, batched_least_squares, numerical_jacobian
from mirispec_steps.core.gaussian import FWHM_TO_SIGMA
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.core import centroid as centroid_core
from mirispec_steps.mrs.core.centroid import CentroidPixels, CentroidSettings, fit_centroids
from mirispec_steps.mrs.core.psf import MrsPsf
from mirispec_steps.mrs.core.spectral_grid import bin_members, spectral_grid
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.simulate.mrs import default_resolving_power


def centroid(model, **parameters):
    return MrsCentroidStep.call(model, **parameters)


def continuum(scale):
    return lambda wavelength: scale * 0.02 * (wavelength / 10.0) ** 1.5


@pytest.mark.parametrize("oversampling", [1.0, 2.0])
def test_spectral_grid_from_resolving_power(oversampling):
    resolution = default_resolving_power()["2C"]
    grid = spectral_grid(10.02, 11.70, resolution, oversampling)
    assert np.all(np.diff(grid.wavelength) > 0)
    assert_allclose(grid.width, grid.wavelength / resolution(grid.wavelength))
    steps = np.diff(grid.wavelength)
    assert_allclose(steps, grid.width[:-1] / oversampling, rtol=1e-12)
    assert grid.wavelength[0] - grid.width[0] / 2 >= 10.02 - 1e-12
    assert grid.wavelength[-1] + grid.width[-1] / 2 <= 11.70
    wavelength = np.random.default_rng(0).uniform(10.0, 11.8, 20000)
    members = bin_members(wavelength, grid)
    for k in (0, len(grid) // 2, len(grid) - 1):
        chosen = members.index[k][members.inside[k]]
        expected = np.flatnonzero(np.abs(wavelength - grid.wavelength[k]) <= grid.width[k] / 2)
        assert np.array_equal(np.sort(chosen), expected)


def psf_sigma(grid):
    """Core sigma of the package's PSF model in each bin: what the step takes from mrspsf."""
    return MrsPsf().fwhm(grid.wavelength) * FWHM_TO_SIGMA


def _analytic_pixels(alpha0, beta0, wavelength_count=40, noise=0.0, seed=0):
    """A toy slicer: 11 slices of 0.3 arcsec, 0.2-arcsec pixels, PSF footprint-integrated."""
    rng = np.random.default_rng(seed)
    slice_beta = (np.arange(11) - 5) * 0.3
    edges = np.arange(-2.0, 2.0001, 0.2)
    low, high = edges[:-1], edges[1:]
    wavelength = np.linspace(10.0, 10.2, wavelength_count)
    grid_w, grid_s, grid_a = np.meshgrid(
        wavelength, np.arange(11), np.arange(low.size), indexing="ij"
    )
    alpha_low, alpha_high = low[grid_a].ravel(), high[grid_a].ravel()
    beta = slice_beta[grid_s].ravel()
    wave = grid_w.ravel()
    psf = MrsPsf(wing_fraction=0.0)
    fraction = psf.footprint_fraction(
        alpha_low, alpha_high, beta - 0.15, beta + 0.15, alpha0, beta0, wave
    )
    data = 1000.0 * fraction / (0.2 * 0.3) + 2.0
    variance = np.full(data.size, max(noise, 1e-6) ** 2)
    data = data + noise * rng.standard_normal(data.size)
    pixels = CentroidPixels(
        alpha_low,
        alpha_high,
        beta,
        grid_s.ravel() + 1,
        wave,
        data,
        variance,
        np.ones(data.size, bool),
        slice_beta,
        0.3,
    )
    # one bin per wavelength sample
    step = wavelength[1] - wavelength[0]
    grid = spectral_grid(10.0 - step / 2, 10.2 + step / 2, lambda w: w / step + 0 * w)
    return pixels, grid


@pytest.mark.parametrize("position", [(0.0, 0.0), (0.37, -0.21), (-1.1, 0.45), (0.05, 0.15)])
def test_noise_free_gaussian_recovered_exactly(position):
    pixels, grid = _analytic_pixels(*position)
    solution = fit_centroids(pixels, grid, psf_sigma(grid))
    assert np.all(solution.status == "ok")
    assert_allclose(solution.alpha, position[0], atol=1e-5)
    assert_allclose(solution.beta, position[1], atol=1e-5)
    assert_allclose(solution.sigma_alpha, psf_sigma(grid), rtol=1e-4)


def test_pulls_of_analytic_noise_are_honest():
    pulls = []
    for seed in range(5):
        pixels, grid = _analytic_pixels(0.21, -0.13, wavelength_count=200, noise=3.0, seed=seed)
        solution = fit_centroids(pixels, grid, psf_sigma(grid))
        ok = solution.ok
        pulls.append((solution.alpha[ok] - 0.21) / solution.alpha_err[ok])
        pulls.append((solution.beta[ok] + 0.13) / solution.beta_err[ok])
    assert_honest_pulls(np.concatenate(pulls), label="analytic")


BANDS = [
    ("MIRIFUSHORT", "SHORT", 1, 0.35, -0.42),
    ("MIRIFUSHORT", "LONG", 2, -0.9, 0.61),
    ("MIRIFULONG", "MEDIUM", 3, 1.1, 0.2),
    ("MIRIFULONG", "LONG", 4, -0.6, -1.3),
]


@pytest.mark.parametrize(("detector", "band", "channel", "alpha", "beta"), BANDS)
def test_track_within_10_mas_in_every_band(tmp_path, detector, band, channel, alpha, beta):
    # per-bin peak SNR >= 50 (the simulated continuum at 0.2x the default)
    simulated, calibrated = calibrated_mrs(
        tmp_path,
        detector=detector,
        band=band,
        seed=channel,
        alpha=alpha,
        beta=beta,
        continuum=continuum(0.2),
        lines=(),
    )
    table = read_centroid(centroid(calibrated))
    rows = table[table["channel"] == channel]
    ok = rows["status"] == "ok"
    assert ok.mean() >= 0.98
    assert np.max(np.abs(rows["alpha_smooth"] - alpha)) < 0.01
    assert np.max(np.abs(rows["beta_smooth"] - beta)) < 0.01
    final = table.meta["final"][f"{channel}{'ABC'['SHORT MEDIUM LONG'.split().index(band)]}"]
    assert abs(final["alpha_final"] - alpha) < 3 * final["alpha_final_err"] + 0.002


def test_real_flight_geometry(real_mrs_dir, tmp_path):
    simulated, calibrated = calibrated_mrs(
        tmp_path,
        detector="MIRIFULONG",
        band="LONG",
        reference_dir=real_mrs_dir,
        seed=8,
        alpha=0.4,
        beta=-0.5,
        continuum=continuum(0.3),
        lines=(),
    )
    table = read_centroid(centroid(calibrated))
    for channel in (3, 4):
        rows = table[table["channel"] == channel]
        assert (rows["status"] == "ok").mean() >= 0.98
        assert np.max(np.abs(rows["alpha_smooth"] - 0.4)) < 0.01
        assert np.max(np.abs(rows["beta_smooth"] + 0.5)) < 0.01


@pytest.fixture(scope="module")
def faint(tmp_path_factory):
    """Per-bin peak SNR about 5 in band 1A."""
    return calibrated_mrs(
        tmp_path_factory.mktemp("faint"),
        seed=11,
        alpha=-0.3,
        beta=0.25,
        continuum=continuum(0.0018),
        lines=(),
        bad_pixel_fraction=2e-3,
    )


def test_faint_source(faint):
    simulated, calibrated = faint
    truth = simulated.truth
    # peak signal-to-noise per bin: brightest pixel of each detector row (about a bin)
    source = np.nan_to_num(truth.source_surface_brightness[:, :516])
    peak = np.argmax(source, axis=1)
    rows = np.arange(source.shape[0])
    snr = source[rows, peak] / calibrated.err[rows, peak]
    assert 3 < np.nanmedian(snr) < 8
    table = read_centroid(centroid(calibrated))
    for channel in (1, 2):
        rows = table[table["channel"] == channel]
        assert np.all(np.isfinite(rows["alpha_smooth"])) and np.all(
            np.isfinite(rows["beta_smooth"])
        )
        assert np.max(np.abs(rows["alpha_smooth"] + 0.3)) < 0.05
        assert np.max(np.abs(rows["beta_smooth"] - 0.25)) < 0.05
        failed = rows["status"] == "failed"
        assert np.all(np.isnan(rows["alpha"][failed]))
        assert np.all(np.isfinite(rows["alpha"][~failed]))
        assert set(np.unique(rows["status"])) <= {"ok", "low_signal", "failed", "outlier"}


@pytest.mark.parametrize(
    ("alpha", "beta", "label"),
    # 1A: 21 slices of 0.177 arcsec centred on beta = 0, so slice edges lie at
    # (k + 0.5) * 0.177; -3.5 * 0.177 is the edge between slices 7 and 8.
    [(1.35, 0.1, "near the field edge"), (0.2, -3.5 * 0.177, "on a slice boundary")],
)
def test_edge_and_slice_boundary(tmp_path, alpha, beta, label):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=12, alpha=alpha, beta=beta, continuum=continuum(0.3), lines=()
    )
    geometry = mrs_geometry(calibrated)[0]
    if "slice" in label:
        edges = geometry.slice_beta[:-1] + geometry.slice_width / 2
        assert np.min(np.abs(edges - beta)) < 1e-6
    table = read_centroid(centroid(calibrated))
    rows = table[table["channel"] == 1]
    assert (rows["status"] == "ok").mean() >= 0.98, label
    assert np.max(np.abs(rows["alpha_smooth"] - alpha)) < 0.01, label
    assert np.max(np.abs(rows["beta_smooth"] - beta)) < 0.01, label


def test_bad_pixel_at_peak_and_cosmic_rays(tmp_path):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=13, alpha=0.1, beta=0.0, continuum=continuum(0.3), lines=()
    )
    clean = read_centroid(centroid(calibrated))
    damaged = calibrated.copy()
    truth = simulated.truth.source_surface_brightness
    peak_column = np.nanargmax(np.nan_to_num(truth), axis=1)
    rows = np.arange(100, 1000, 7)
    columns = peak_column[rows]
    # dead peak pixels every 7th row, flagged
    damaged.dq[rows, columns] |= 1
    damaged.data[rows, columns] = np.nan
    # and cosmic rays (unflagged, 5x the peak) beside the peak every 11th row
    hit_rows = np.arange(103, 1000, 11)
    hit_columns = peak_column[hit_rows] + 1
    damaged.data[hit_rows, hit_columns] += 5 * np.nanmax(truth[hit_rows], axis=1)
    table = read_centroid(centroid(damaged))
    for channel in (1, 2):
        rows_c = table[table["channel"] == channel]
        clean_c = clean[clean["channel"] == channel]
        assert (rows_c["status"] == "ok").mean() >= 0.97
        assert np.max(np.abs(rows_c["alpha_smooth"] - 0.1)) < 0.01
        assert np.max(np.abs(rows_c["beta_smooth"] - 0.0)) < 0.01
        ok = (rows_c["status"] == "ok") & (clean_c["status"] == "ok")
        shift = np.abs(rows_c["alpha"][ok] - clean_c["alpha"][ok]) / clean_c["alpha_err"][ok]
        assert np.percentile(shift, 99) < 3


def test_pulls_of_per_bin_positions(tmp_path):
    # per-bin peak SNR about 50: noise dominates the model error
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=14, alpha=-0.25, beta=0.33, continuum=continuum(0.05), lines=()
    )
    table = read_centroid(centroid(calibrated))
    ok = table["status"] == "ok"
    pulls_alpha = (table["alpha"][ok] + 0.25) / table["alpha_err"][ok]
    pulls_beta = (table["beta"][ok] - 0.33) / table["beta_err"][ok]
    assert_honest_pulls(pulls_alpha, label="alpha")
    # The beta errors are 5-9% conservative (pull std 0.91-0.94 over four draws, with the
    # simulator's fringes of either period): the across-slice Gaussian fit on two or three
    # slices at this signal-to-noise. The allowance is one-sided: the mean stays unbiased
    # and the errors may be conservative by up to 10%, never optimistic.
    pulls_beta = np.asarray(pulls_beta, dtype=float)
    pulls_beta = pulls_beta[np.isfinite(pulls_beta)]
    bound = 4.0 / np.sqrt(2.0 * pulls_beta.size)
    std = float(np.std(pulls_beta))
    assert abs(np.mean(pulls_beta)) < 4.0 / np.sqrt(pulls_beta.size), np.mean(pulls_beta)
    assert 0.90 - bound < std < 1.0 + bound, std


def test_strun_table_plot_and_save_load(mrs_noisy, tmp_path):
    from mirispec_steps import MrsCalibrateStep

    simulated, files = mrs_noisy
    calibrated = MrsCalibrateStep.call(
        files["rate"],
        background=files["background"],
        override_photom=files["photom"],
        override_fringe=files["fringe"],
    )
    cal_path = tmp_path / "sim_mrscal.fits"
    calibrated.save(cal_path)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "strun"),
            "mrs_centroid",
            str(cal_path),
            "--save_centroid_table=True",
            "--save_plots=True",
            f"--output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    product = tmp_path / "sim_mrscen.fits"
    from_file = read_centroid(product)
    from_table = read_centroid(tmp_path / "sim_centroid.ecsv")
    assert len(from_file) == len(from_table) > 500
    assert_allclose(from_file["alpha"], from_table["alpha"], equal_nan=True)
    assert list(from_file.columns)[:14] == [
        "channel",
        "band",
        "wavelength",
        "bin_width",
        "amplitude",
        "alpha",
        "beta",
        "sigma_alpha",
        "sigma_beta",
        "alpha_err",
        "beta_err",
        "status",
        "alpha_smooth",
        "beta_smooth",
    ]
    in_memory = read_centroid(centroid(calibrated))
    assert_allclose(in_memory["alpha_smooth"], from_file["alpha_smooth"])
    from PIL import Image

    with Image.open(tmp_path / "sim_centroid.png") as image:
        assert image.format == "PNG"
        assert image.size[0] > 800 and image.size[1] > 400
    truth = simulated.truth
    ok = from_file["status"] == "ok"
    assert np.max(np.abs(from_file["alpha_smooth"][ok] - truth.alpha)) < 0.01


def test_fixed_position(mrs_noisy):
    simulated, files = mrs_noisy
    calibrated = _calibrated_from_files(files)
    table = read_centroid(centroid(calibrated, fixed_position=[0.5, -0.25]))
    assert np.all(table["status"] == "fixed")
    assert np.all(table["alpha_smooth"] == 0.5) and np.all(table["beta_smooth"] == -0.25)


def _calibrated_from_files(files):
    from mirispec_steps import MrsCalibrateStep

    return MrsCalibrateStep.call(
        files["rate"], override_photom=files["photom"], override_fringe=files["fringe"]
    )


def test_no_signal_at_all(tmp_path):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=15, continuum=continuum(0.0), lines=(), bad_pixel_fraction=0
    )
    with pytest.raises(InputDataError, match="no spectral bin holds a detectable point source"):
        centroid(calibrated)


def test_uncalibrated_and_other_modes(mrs_noisy):
    simulated, files = mrs_noisy
    with pytest.raises(InputDataError, match="not calibrated"):
        centroid(simulated.rate)
    other = simulated.rate.copy()
    other.meta.exposure.type = "MIR_LRS-FIXEDSLIT"
    with pytest.raises(InputDataError, match="MIR_LRS-FIXEDSLIT, not MRS"):
        centroid(other)


def test_no_wcs_needs_maps(mrs_noisy, tmp_path):
    from mirispec_steps.mrs.maps import write_mrs_maps

    simulated, files = mrs_noisy
    calibrated = _calibrated_from_files(files)
    bare = calibrated.copy()
    bare.meta.wcs = None
    with pytest.raises(InputDataError, match="override_mrsmaps"):
        centroid(bare)
    maps = write_mrs_maps(calibrated, tmp_path / "maps.asdf")
    from_maps = read_centroid(centroid(bare, override_mrsmaps=str(maps)))
    from_wcs = read_centroid(centroid(calibrated))
    assert_allclose(from_maps["alpha"], from_wcs["alpha"], equal_nan=True)


@pytest.mark.parametrize("noise", [0.0, 3.0])
def test_windowed_stage3_equals_fit_on_every_pixel(monkeypatch, noise):
    # Stage 3 evaluates only pixels near the source and summarises the rest;
    # with a window larger than the field every pixel is evaluated.
    pixels, grid = _analytic_pixels(0.37, -0.21, wavelength_count=60, noise=noise, seed=4)
    windowed = fit_centroids(pixels, grid, psf_sigma(grid))
    monkeypatch.setattr(centroid_core, "WINDOW_SIGMAS", 1e3)
    everything = fit_centroids(pixels, grid, psf_sigma(grid))
    assert np.array_equal(windowed.status, everything.status)
    assert np.array_equal(windowed.n_pixels, everything.n_pixels)
    for name in ("alpha", "beta", "sigma_alpha", "amplitude", "background"):
        assert_allclose(getattr(windowed, name), getattr(everything, name), rtol=1e-6, atol=1e-7)
    for name in ("alpha_err", "beta_err"):
        # chi-square and degrees of freedom (error inflation) include the summarised pixels
        assert_allclose(getattr(windowed, name), getattr(everything, name), rtol=1e-4)


def test_window_too_small_falls_back_to_larger_windows(monkeypatch):
    pixels, grid = _analytic_pixels(-1.1, 0.45, wavelength_count=20)
    attempts = []
    original = centroid_core._Stage3.fit

    def recording(self, bins, initial, weight, centre, half_window, attempt=0):
        attempts.append(attempt)
        return original(self, bins, initial, weight, centre, half_window, attempt)

    monkeypatch.setattr(centroid_core._Stage3, "fit", recording)
    # half a sigma: too small even when doubled, so the last attempt uses every pixel
    monkeypatch.setattr(centroid_core, "WINDOW_SIGMAS", 0.5)
    solution = fit_centroids(pixels, grid, psf_sigma(grid))
    assert attempts == [0, 1, 2]
    assert np.all(solution.status == "ok")
    assert_allclose(solution.alpha, -1.1, atol=1e-5)
    assert_allclose(solution.beta, 0.45, atol=1e-5)


def test_batched_fit_in_blocks_equals_one_block(monkeypatch):
    rng = np.random.default_rng(3)
    x = np.linspace(-3, 3, 40)
    truth = np.column_stack(
        [rng.uniform(1, 3, 50), rng.uniform(-1, 1, 50), rng.uniform(0.3, 1, 50)]
    )
    data = truth[:, :1] * np.exp(-0.5 * ((x - truth[:, 1:2]) / truth[:, 2:3]) ** 2)
    data = data + 0.01 * rng.standard_normal(data.shape)

    def model(params, rows):
        return params[:, :1] * np.exp(-0.5 * ((x - params[:, 1:2]) / params[:, 2:3]) ** 2)

    evaluate = numerical_jacobian(model, np.array([1e-7, 1e-7, 1e-7]))
    start = truth * rng.uniform(0.9, 1.1, truth.shape)
    weight = np.full(data.shape, 1e4)
    together = batched_least_squares(evaluate, start, data, weight)
    monkeypatch.setattr(batched_fit, "BLOCK_POINTS", 7 * x.size)
    in_blocks = batched_least_squares(evaluate, start, data, weight)
    for name in BatchedFit.FIELDS:
        assert_allclose(getattr(in_blocks, name), getattr(together, name))
    # and both agree with an independent fit of one row
    expected, covariance = curve_fit(
        lambda x, a, mu, s: a * np.exp(-0.5 * ((x - mu) / s) ** 2),
        x,
        data[7],
        p0=start[7],
        sigma=np.full(x.size, 0.01),
        absolute_sigma=True,
    )
    assert_allclose(together.params[7], expected, rtol=1e-5)
    assert_allclose(together.errors[7], np.sqrt(np.diag(covariance)), rtol=1e-3)


def test_rotated_ellipse_fit_recovers_the_position():
    pixels, grid = _analytic_pixels(0.37, -0.21, wavelength_count=20, noise=1.0, seed=2)
    solution = fit_centroids(pixels, grid, psf_sigma(grid), CentroidSettings(rotation=True))
    assert np.count_nonzero(solution.ok) >= 19
    assert_allclose(solution.alpha[solution.ok], 0.37, atol=0.01)
    assert_allclose(solution.beta[solution.ok], -0.21, atol=0.01)
    assert np.all(np.isfinite(solution.theta[solution.ok]))
