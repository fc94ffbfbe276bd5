"""MrsExtractStep: exact overlaps, PSF models, flux accuracy, honesty, robustness, bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_honest_pulls, calibrated_mrs
from numpy.testing import assert_allclose

from mirispec_steps import MrsCentroidStep, MrsExtractStep
from mirispec_steps.errors import InputDataError, ReferenceFileError
from mirispec_steps.mrs.core.ellipse_overlap import EllipticalAperture, ellipse_overlap
from mirispec_steps.mrs.core.psf import CubePsf, MrsPsf
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.mrs.references import load_mrs_psf, write_mrs_psf
from mirispec_steps.simulate.mrs import EmissionLine

JY = "Jy"


def extract(model, **parameters):
    return MrsExtractStep.call(model, **parameters)


def continuum(scale):
    return lambda wavelength: scale * 0.02 * (wavelength / 10.0) ** 1.5


def ratios(x1d, simulated):
    """FLUX / truth and pulls per channel name."""
    result = {}
    for spec in x1d.spec:
        table = spec.spec_table
        truth = simulated.truth.flux(table["WAVELENGTH"], spec.name)
        result[spec.name] = (
            table["FLUX"] / truth,
            (table["FLUX"] - truth) / table["FLUX_ERROR"],
            table["FLUX"] / table["FLUX_ERROR"],
        )
    return result


# ---------------------------------------------------------------- exact overlaps


def _grid_fraction(low_a, high_a, low_b, high_b, centre, aperture, samples=1500):
    alpha = low_a + (np.arange(samples) + 0.5) / samples * (high_a - low_a)
    beta = low_b + (np.arange(samples) + 0.5) / samples * (high_b - low_b)
    grid_a, grid_b = np.meshgrid(alpha - centre[0], beta - centre[1])
    angle = np.deg2rad(aperture.position_angle)
    u = (grid_a * np.cos(angle) + grid_b * np.sin(angle)) / aperture.semi_major
    v = (-grid_a * np.sin(angle) + grid_b * np.cos(angle)) / (
        aperture.semi_major * aperture.axis_ratio
    )
    return np.mean(u**2 + v**2 <= 1)


@pytest.mark.parametrize("seed", range(6))
def test_ellipse_overlap_matches_fine_sampling(seed):
    rng = np.random.default_rng(seed)
    low_a, low_b = rng.uniform(-1.2, 0.8, 2)
    high_a, high_b = low_a + rng.uniform(0.05, 0.6), low_b + rng.uniform(0.05, 0.6)
    aperture = EllipticalAperture(
        rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0), rng.uniform(-90, 90)
    )
    centre = rng.uniform(-0.3, 0.3, 2)
    exact = ellipse_overlap(low_a, high_a, low_b, high_b, *centre, aperture)
    assert_allclose(
        exact, _grid_fraction(low_a, high_a, low_b, high_b, centre, aperture), atol=2e-3
    )


def test_ellipse_overlap_tiles_to_the_ellipse_area():
    edges = np.linspace(-1.3, 1.3, 27)
    low_a, low_b = np.meshgrid(edges[:-1], edges[:-1])
    high_a, high_b = np.meshgrid(edges[1:], edges[1:])
    aperture = EllipticalAperture(0.9, 0.6, 33.0)
    fraction = ellipse_overlap(low_a, high_a, low_b, high_b, 0.11, -0.07, aperture)
    area = np.sum(fraction * (high_a - low_a) * (high_b - low_b))
    assert_allclose(area, aperture.area, rtol=1e-12)
    # a rectangle wholly inside is 1, wholly outside 0, the ellipse inside a rectangle its area
    assert_allclose(ellipse_overlap(-0.01, 0.01, -0.01, 0.01, 0, 0, aperture), 1.0, atol=1e-12)
    assert ellipse_overlap(2.0, 2.1, 2.0, 2.1, 0, 0, aperture) == 0.0
    assert_allclose(ellipse_overlap(-1, 1, -1, 1, 0, 0, aperture) * 4, aperture.area, rtol=1e-12)


def _psf_cube(psf, wavelengths, step=0.01, half=3.0):
    axis = np.arange(-half, half + step / 2, step)
    planes = [
        psf.footprint_fraction(
            axis[None, :] - step / 2,
            axis[None, :] + step / 2,
            axis[:, None] - step / 2,
            axis[:, None] + step / 2,
            0.0,
            0.0,
            wavelength,
        )
        / step**2
        for wavelength in wavelengths
    ]
    return axis, np.array(planes)


def test_cube_psf_integrates_like_the_analytic_model():
    psf = MrsPsf()
    wavelengths = np.linspace(4.8, 5.9, 23)
    axis, data = _psf_cube(psf, wavelengths)
    cube = CubePsf(wavelengths, axis, axis, data)
    rng = np.random.default_rng(3)
    low_a, low_b = rng.uniform(-0.6, 0.4, (2, 200))
    wavelength = rng.uniform(4.9, 5.8, 200)
    edges = (low_a, low_a + 0.2, low_b, low_b + 0.18)
    from_cube = cube.footprint_fraction(*edges, 0.05, -0.03, wavelength)
    analytic = psf.footprint_fraction(*edges, 0.05, -0.03, wavelength)
    # planes 0.05 um apart: the linear interpolation between them is good to a few 1e-3
    assert_allclose(from_cube, analytic, rtol=5e-3, atol=2e-6)
    assert_allclose(cube.fwhm(5.3), psf.fwhm(5.3), rtol=0.02)
    # A cube holding a measured share of the light scales every footprint by it.
    enclosed = np.linspace(0.97, 0.99, wavelengths.size)
    shared = CubePsf(wavelengths, axis, axis, data, enclosed)
    expected = from_cube * np.interp(wavelength, wavelengths, enclosed)
    assert_allclose(shared.footprint_fraction(*edges, 0.05, -0.03, wavelength), expected,
                    rtol=2e-3, atol=1e-8)  # fmt: skip


_PLANES = {"wavelength": [5.0, 5.5], "alpha": [0, 1], "beta": [0, 1], "data": np.ones((2, 2, 2))}


@pytest.mark.parametrize(
    ("bands", "kind", "message"),
    [
        ({"1A": {"wavelength_range": [4.8, 5.9]}}, "analytic", "missing key 'fwhm_slope'"),
        ({"9Z": {}}, "analytic", "not an MRS band"),
        ({"1A": {}}, "gaussian", "'model' must be"),
        (
            {"1A": {"wavelength": [5.0, 5.5], "alpha": [0, 1], "beta": [0, 1], "data": np.ones(3)}},
            "cube",
            "has shape",
        ),
        (
            {"1A": {"wavelength": [5.5, 5.0], "alpha": [0, 1], "beta": [0, 1], "data": np.ones(3)}},
            "cube",
            "must be increasing",
        ),
        ({"1A": {**_PLANES, "enclosed": [0.98]}}, "cube", "'enclosed' must hold"),
        ({"1A": {**_PLANES, "enclosed": [0.98, 1.3]}}, "cube", "'enclosed' must hold"),
    ],
)
def test_malformed_psf_files_are_named(tmp_path, bands, kind, message):
    import asdf

    path = tmp_path / "bad_mrspsf.asdf"
    asdf.AsdfFile({"model": kind, "bands": bands}).write_to(path)
    with pytest.raises(ReferenceFileError, match="bad_mrspsf.asdf") as error:
        load_mrs_psf(path)
    assert message in str(error.value)


# ---------------------------------------------------------------- accuracy

BANDS = [
    ("MIRIFUSHORT", "SHORT", 1, 0.35, -0.42),
    ("MIRIFUSHORT", "LONG", 2, -0.9, 0.61),
    ("MIRIFULONG", "MEDIUM", 3, 1.1, 0.2),
    ("MIRIFULONG", "LONG", 4, -0.6, -1.3),
]


@pytest.mark.parametrize(("detector", "band", "channel", "alpha", "beta"), BANDS)
def test_noise_free_flux_in_every_band(tmp_path, detector, band, channel, alpha, beta):
    simulated, calibrated = calibrated_mrs(
        tmp_path, detector=detector, band=band, seed=channel, alpha=alpha, beta=beta,
        lines=(), noise=False, bad_pixel_fraction=0,
    )  # fmt: skip
    position = {"alpha": alpha, "beta": beta, "oversampling": 1.0}
    for parameters, limit in [
        ({"method": "aperture", "radius": 1.5}, 0.01),
        ({"method": "aperture", "radius": 2.5, "subtract_background": True}, 0.01),
        ({"method": "optimal"}, 0.005),
    ]:
        for name, (ratio, _, _) in ratios(
            extract(calibrated, **position, **parameters), simulated
        ).items():  # noqa: E501
            assert np.all(np.isfinite(ratio)), (name, parameters)
            assert np.max(np.abs(ratio - 1)) < limit, (name, parameters)


def test_real_flight_geometry(real_mrs_dir, tmp_path):
    simulated, calibrated = calibrated_mrs(
        tmp_path, detector="MIRIFULONG", band="LONG", reference_dir=real_mrs_dir, seed=8,
        alpha=0.4, beta=-0.5, continuum=continuum(0.5), lines=(),
    )  # fmt: skip
    centred = MrsCentroidStep.call(calibrated)
    for method, limit in (("aperture", 0.01), ("optimal", 0.005)):
        for name, (ratio, pulls, _) in ratios(extract(centred, method=method), simulated).items():
            assert abs(np.nanmedian(ratio) - 1) < limit, (method, name)
            assert_honest_pulls(pulls, label=f"{method} {name}")


@pytest.fixture(scope="module")
def noisy_draws(tmp_path_factory):
    """One 1A/2A exposure and three more noise draws of it, calibrated."""
    from mirispec_steps.mrs.calibrate import calibrate_mrs, load_backgrounds
    from mirispec_steps.mrs.references import load_calibration_references

    folder = tmp_path_factory.mktemp("draws")
    simulated, calibrated = calibrated_mrs(
        folder, seed=21, alpha=0.2, beta=0.1, continuum=continuum(0.05), lines=()
    )
    files = simulated.write(folder / "again")
    references = load_calibration_references(
        simulated.rate, str(files["fringe"]), str(files["photom"])
    )
    draws = [calibrated]
    for seed in (22, 23, 24):
        again = simulated.redraw(seed)
        background = load_backgrounds(again.background, again.rate, 3.0)
        draws.append(calibrate_mrs(again.rate, references, background))
    return simulated, draws


def test_pulls_over_noise_realisations(noisy_draws):
    simulated, draws = noisy_draws
    for method in ("aperture", "optimal"):
        pulls = []
        for model in draws:
            for _, pull, _ in ratios(
                extract(model, method=method, alpha=0.2, beta=0.1), simulated
            ).values():  # noqa: E501
                pulls.append(pull)
        pulls = np.concatenate(pulls)
        assert pulls.size > 4000
        assert_honest_pulls(pulls, label=method)


@pytest.mark.parametrize(("scale", "gain"), [(1.0, 1.0), (0.05, 1.1), (0.003, 1.2)])
def test_optimal_snr_beats_aperture(tmp_path, scale, gain):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=4, alpha=0.2, beta=0.1, lines=(), continuum=continuum(scale)
    )
    optimal = ratios(extract(calibrated, method="optimal", alpha=0.2, beta=0.1), simulated)
    aperture = ratios(extract(calibrated, method="aperture", alpha=0.2, beta=0.1), simulated)
    for name in optimal:
        snr_optimal, snr_aperture = np.nanmedian(optimal[name][2]), np.nanmedian(aperture[name][2])
        assert snr_optimal >= gain * snr_aperture, (name, snr_optimal, snr_aperture)
        # and the fluxes agree with the truth within the errors
        assert abs(np.nanmedian(optimal[name][1])) < 0.3


@pytest.mark.parametrize("method", ["optimal", "aperture"])
def test_emission_line_flux(tmp_path, method):
    line = EmissionLine(5.3402, 2.0e-4)
    simulated, calibrated = calibrated_mrs(tmp_path, seed=5, alpha=-0.4, beta=0.3, lines=(line,))
    x1d = extract(calibrated, method=method, alpha=-0.4, beta=0.3)
    table = x1d.spec[0].spec_table
    wavelength = table["WAVELENGTH"]
    near = np.abs(wavelength - line.wavelength) < 0.012
    excess = (table["FLUX"] - simulated.truth.continuum(wavelength)) * np.gradient(wavelength)
    assert abs(np.sum(excess[near]) / line.flux - 1) < 0.02


def test_dead_pixel_and_cosmic_ray_in_the_core(tmp_path):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=13, alpha=0.1, beta=0.0, continuum=continuum(0.3), lines=(),
        bad_pixel_fraction=0,
    )  # fmt: skip
    clean = extract(calibrated, alpha=0.1, beta=0.0)
    damaged = calibrated.copy()
    truth = np.nan_to_num(simulated.truth.source_surface_brightness)
    peak_column = np.argmax(truth, axis=1)
    dead_rows = np.arange(100, 1000, 7)
    damaged.dq[dead_rows, peak_column[dead_rows]] |= 1
    damaged.data[dead_rows, peak_column[dead_rows]] = np.nan
    hit_rows = np.arange(103, 1000, 11)
    damaged.data[hit_rows, peak_column[hit_rows] + 1] += 5 * truth[hit_rows].max(axis=1)
    for spikes in (True, False):  # the spike filter, or the Horne rejection alone
        hurt = extract(damaged, alpha=0.1, beta=0.0, reject_spikes=spikes)
        for before, after in zip(clean.spec, hurt.spec, strict=True):
            change = after.spec_table["FLUX"] / before.spec_table["FLUX"] - 1
            assert np.max(np.abs(change)) < 0.01, spikes


@pytest.mark.parametrize(
    ("alpha", "beta"),
    # 1A slices are 0.177 arcsec wide, centred on beta = 0: -3.5 * 0.177 is a slice edge
    [(1.0, 0.05), (0.2, -3.5 * 0.177)],
)
def test_offset_source_and_slice_edge(tmp_path, alpha, beta):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=12, alpha=alpha, beta=beta, continuum=continuum(0.3), lines=()
    )
    geometry = mrs_geometry(calibrated)[0]
    if alpha < 1:
        assert np.min(np.abs(geometry.slice_beta[:-1] + geometry.slice_width / 2 - beta)) < 1e-6
    centred = MrsCentroidStep.call(calibrated)
    for method, limit in (("aperture", 0.01), ("optimal", 0.005)):
        for name, (ratio, pulls, _) in ratios(extract(centred, method=method), simulated).items():
            assert abs(np.nanmedian(ratio) - 1) < limit, (method, name)
            assert_honest_pulls(pulls, label=f"{method} {name}")


def test_background_annulus_and_fitted_constant(tmp_path):
    simulated, calibrated = calibrated_mrs(
        tmp_path, seed=6, alpha=0.0, beta=0.0, continuum=continuum(0.5), lines=(),
        bad_pixel_fraction=0,
    )  # fmt: skip
    residual = calibrated.copy()
    residual.data = residual.data + 5.0  # MJy/sr left over by an imperfect background
    for method, limit in (("aperture", 0.01), ("optimal", 0.005)):
        plain = ratios(extract(residual, method=method, alpha=0.0, beta=0.0), simulated)
        x1d = extract(residual, method=method, alpha=0.0, beta=0.0, subtract_background=True)
        fixed = ratios(x1d, simulated)
        for name in fixed:
            assert abs(np.nanmedian(plain[name][0]) - 1) > 0.02  # the residual matters
            assert abs(np.nanmedian(fixed[name][0]) - 1) < limit, (method, name)
        for spec in x1d.spec:
            assert_allclose(np.nanmedian(spec.spec_table["BACKGROUND"]), 5.0, rtol=0.03)


# ---------------------------------------------------------------- products and usage


def test_chain_strun_products_and_plot(mrs_noisy, tmp_path):
    from mirispec_steps import MrsCalibrateStep

    simulated, files = mrs_noisy
    calibrated = MrsCalibrateStep.call(
        files["rate"],
        background=files["background"],
        override_photom=files["photom"],
        override_fringe=files["fringe"],
    )
    centred = MrsCentroidStep.call(calibrated)
    path = tmp_path / "sim_mrscen.fits"
    centred.save(path)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "strun"),
            "mrs_extract",
            str(path),
            "--method=aperture",
            "--radius=2",
            "--radius_units=fwhm",
            "--save_apcorr=True",
            "--save_plots=True",
            f"--output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from stdatamodels.jwst import datamodels

    with datamodels.open(tmp_path / "sim_aperture_x1d.fits") as x1d:
        assert isinstance(x1d, datamodels.MRSMultiSpecModel)
        assert [spec.name for spec in x1d.spec] == ["1A", "2A"]
        assert x1d.meta.cal_step.mrs_extract == "COMPLETE"
        table = x1d.spec[0].spec_table
        assert table.columns["flux"].unit == JY
        assert table.columns["surf_bright"].unit == "MJy/sr"
        for name in ("FLUX_VAR_POISSON", "FLUX_VAR_RNOISE", "FLUX_VAR_FLAT", "NPIXELS", "DQ"):
            assert name in table.columns.names
        assert_allclose(
            table["FLUX_ERROR"] ** 2,
            table["FLUX_VAR_POISSON"] + table["FLUX_VAR_RNOISE"] + table["FLUX_VAR_FLAT"],
            rtol=1e-5,
        )
        record = x1d.mirispec_extraction.instance
        assert record["method"] == "aperture" and record["radius_units"] == "fwhm"
        assert record["psf_file"] == "mirispec_miri_mrs_psf.asdf"
        from_file = ratios(x1d, simulated)
        corrections = record["channels"]["1"]["aperture_correction"]
    # the chain reproduces the simulated spectrum (lines included, away from the lines)
    for name, (ratio, _, _) in from_file.items():
        assert abs(np.nanmedian(ratio) - 1) < 0.01, name
    from astropy.table import Table

    apcorr = Table.read(tmp_path / "sim_apcorr.ecsv", format="ascii.ecsv")
    assert_allclose(apcorr["apcorr"][apcorr["channel"] == 1], corrections)
    # 1/EE of a 2 FWHM aperture on average; per bin it also corrects how the bin's pixels
    # sample the aperture (a slice row enters a bin once or twice) and the in-bin spectrum
    assert 1.0 < np.median(apcorr["apcorr"]) < 1.06
    assert np.all((apcorr["apcorr"] > 0.7) & (apcorr["apcorr"] < 1.6))
    from PIL import Image

    with Image.open(tmp_path / "sim_aperture_x1d.png") as image:
        assert image.format == "PNG"
        assert image.size[0] > 900 and image.size[1] > 500
    # Step.call with the optimal default on the in-memory model gives the same spectrum
    optimal = ratios(extract(centred), simulated)
    for name, (ratio, _, _) in optimal.items():
        assert abs(np.nanmedian(ratio) - 1) < 0.005, name


def test_psf_cube_override(mrs_noiseless, tmp_path):
    simulated, files = mrs_noiseless
    from mirispec_steps.mrs.calibrate import calibrate_mrs, load_backgrounds
    from mirispec_steps.mrs.references import load_calibration_references

    references = load_calibration_references(simulated.rate, files["fringe"], files["photom"])
    background = load_backgrounds(simulated.background, simulated.rate, 3.0)
    calibrated = calibrate_mrs(simulated.rate, references, background)
    position = {"alpha": simulated.truth.alpha, "beta": simulated.truth.beta}
    psf = MrsPsf()
    bands = {}
    for band, (low, high) in (("1A", (4.85, 5.8)), ("2A", (7.45, 8.85))):
        wavelengths = np.linspace(low, high, 25)
        axis, data = _psf_cube(psf, wavelengths, step=0.02)
        bands[band] = {"wavelength": wavelengths, "alpha": axis, "beta": axis, "data": data}
    cube_file = write_mrs_psf(tmp_path / "cube_mrspsf.asdf", bands, "cube")
    x1d = extract(calibrated, override_mrspsf=str(cube_file), **position)
    for name, (ratio, _, _) in ratios(x1d, simulated).items():
        assert np.nanpercentile(np.abs(ratio - 1), 95) < 0.005, name
    assert x1d.mirispec_extraction.instance["psf_file"] == "cube_mrspsf.asdf"
    only_1a = write_mrs_psf(tmp_path / "short_mrspsf.asdf", {"1A": bands["1A"]}, "cube")
    with pytest.raises(ReferenceFileError, match="no PSF for band 2A"):
        extract(calibrated, override_mrspsf=str(only_1a), **position)
    narrow = dict(bands["1A"], wavelength=np.linspace(5.0, 5.2, 25))
    narrow_file = write_mrs_psf(tmp_path / "narrow_mrspsf.asdf", {**bands, "1A": narrow}, "cube")
    with pytest.raises(ReferenceFileError, match="covers 5.0000-5.2000"):
        extract(calibrated, override_mrspsf=str(narrow_file), **position)


def test_bad_input(mrs_noisy):
    simulated, files = mrs_noisy
    from mirispec_steps import MrsCalibrateStep

    calibrated = MrsCalibrateStep.call(
        files["rate"], override_photom=files["photom"], override_fringe=files["fringe"]
    )
    with pytest.raises(InputDataError, match="no centroid solution and no position"):
        extract(calibrated)
    with pytest.raises(InputDataError, match="give both alpha and beta"):
        extract(calibrated, alpha=0.1)
    with pytest.raises(InputDataError, match="outside channel 1A's field"):
        extract(calibrated, alpha=3.5, beta=0.0)
    with pytest.raises(InputDataError, match="outside channel 1A's field"):
        extract(calibrated, alpha=0.0, beta=-2.5)
    with pytest.raises(InputDataError, match="inner < outer"):
        extract(calibrated, alpha=0, beta=0, method="aperture", subtract_background=True,
                annulus=[1.0, 3.0])  # fmt: skip
    with pytest.raises(InputDataError, match="not calibrated"):
        extract(simulated.rate, alpha=0, beta=0)
    other = simulated.rate.copy()
    other.meta.exposure.type = "MIR_LRS-FIXEDSLIT"
    with pytest.raises(InputDataError, match="MIR_LRS-FIXEDSLIT, not MRS"):
        extract(other)
    before = np.array(calibrated.data)
    extract(calibrated, alpha=0.0, beta=0.0)
    assert_allclose(calibrated.data, before, equal_nan=True)  # input untouched
