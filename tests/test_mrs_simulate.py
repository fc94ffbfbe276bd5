"""The MRS simulator, the analytic PSF, the resolving-power file and the mrsmaps reftype."""

import json

import numpy as np
import pytest
from conftest import assert_honest_pulls
from numpy.testing import assert_allclose
from scipy.special import erfc

from mirispec_steps.errors import ReferenceFileError
from mirispec_steps.mrs.core.psf import MrsPsf, gaussian_footprint_fraction
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.mrs.maps import load_mrs_maps, write_mrs_maps
from mirispec_steps.mrs.references import load_mrs_resolution
from mirispec_steps.references import packaged_reference
from mirispec_steps.simulate.mrs import (
    JY_ARCSEC2_TO_MJY_SR,
    EmissionLine,
    ExtendedEmission,
    default_resolving_power,
    simulate_mrs,
)


def quiet_simulation(**kwargs):
    return simulate_mrs(**kwargs)


@pytest.mark.parametrize("wavelength", [5.0, 12.0, 27.0])
@pytest.mark.parametrize("centre", [(0.0, 0.0), (0.13, -0.41)])
def test_psf_footprints_integrate_the_density(wavelength, centre):
    psf = MrsPsf()
    edges = np.linspace(-3.0, 3.0, 13)
    low, high = np.meshgrid(edges[:-1], edges[:-1]), np.meshgrid(edges[1:], edges[1:])
    fraction = psf.footprint_fraction(
        low[0], high[0], low[1], high[1], centre[0], centre[1], wavelength
    )
    # midpoint rule on a fine grid inside each footprint
    fine = np.linspace(-3.0, 3.0, 1201)
    step = fine[1] - fine[0]
    centres = 0.5 * (fine[1:] + fine[:-1])
    alpha, beta = np.meshgrid(centres, centres)
    density = psf.density(alpha, beta, centre[0], centre[1], wavelength) * step**2
    blocks = density.reshape(12, 100, 12, 100).sum(axis=(1, 3))
    assert_allclose(fraction, blocks, rtol=5e-4, atol=1e-9)  # midpoint-rule error
    whole = psf.footprint_fraction(-50.0, 50.0, -50.0, 50.0, centre[0], centre[1], wavelength)
    assert_allclose(whole, 1.0, rtol=1e-12)


def test_psf_shape():
    psf = MrsPsf()
    assert_allclose(psf.fwhm(10.0), 0.436)
    sigma_alpha, sigma_beta = psf.core_sigmas(10.0)
    assert_allclose(sigma_alpha / sigma_beta, psf.axis_ratio)
    # far tail accuracy: the mirrored interval keeps digits right of the centre
    tail = gaussian_footprint_fraction(8.0, 9.0, -50, 50, 0.0, 0.0, 1.0, 1.0)
    expected = 0.5 * (erfc(8.0 / np.sqrt(2.0)) - erfc(9.0 / np.sqrt(2.0)))
    assert_allclose(tail, expected, rtol=1e-9)


def test_resolving_power_file():
    resolution = default_resolving_power()
    assert sorted(resolution.bands) == [f"{c}{b}" for c in "1234" for b in "ABC"]
    assert_allclose(resolution["1A"](5.3), 3632.0)
    assert_allclose(resolution["4C"](26.05), 1440.0)
    assert_allclose(resolution.fwhm("2C", 10.9), 10.9 / 3247.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["bands"].pop("1A") and d["bands"].update({"5Z": d["bands"]["1B"]}), "5Z"),
        (lambda d: d["bands"]["1B"].pop("coefficients"), "'coefficients'"),
        (lambda d: d["bands"]["2A"].update({"coefficients": [-10.0]}), "R <= 0"),
        (lambda d: d.pop("bands"), "'bands'"),
    ],
)
def test_malformed_resolving_power_file(tmp_path, change, message):
    with open(packaged_reference("mirispec_miri_mrs_resolution.json")) as stream:
        content = json.load(stream)
    change(content)
    path = tmp_path / "bad_resolution.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ReferenceFileError, match=f"bad_resolution.json.*{message}"):
        load_mrs_resolution(path)


@pytest.fixture(scope="module")
def continuum_only():
    return quiet_simulation(
        noise=False, lines=(), background=None, bad_pixel_fraction=0, alpha=0.2, beta=0.1
    )


def _light_in_band(simulated):
    """Per channel: sum over pixels of flux density x wavelength span (Jy micron)."""
    totals = {}
    truth = simulated.truth
    for geometry in mrs_geometry(simulated.rate):
        pixels = geometry.y, geometry.x
        flux = truth.source_surface_brightness[pixels] * geometry.pixel_area / JY_ARCSEC2_TO_MJY_SR
        span = geometry.wavelength_high - geometry.wavelength_low
        totals[geometry.channel] = (float(np.sum(flux * span)), geometry)
    return totals


def _enclosed(psf, geometry, alpha, beta, wavelength):
    """PSF light inside the channel's field (alpha half width times the slice stack)."""
    half_alpha = max(np.max(geometry.alpha_high), -np.min(geometry.alpha_low))
    beta_low = geometry.slice_beta[0] - geometry.slice_width / 2
    beta_high = geometry.slice_beta[-1] + geometry.slice_width / 2
    return psf.footprint_fraction(
        -half_alpha, half_alpha, beta_low, beta_high, alpha, beta, wavelength
    )


def test_point_source_flux_is_conserved(continuum_only):
    truth = continuum_only.truth
    for _, (total, geometry) in _light_in_band(continuum_only).items():
        grid = np.linspace(*geometry.wavelength_range, 2000)
        expected = np.trapezoid(
            truth.continuum(grid) * _enclosed(truth.psf, geometry, truth.alpha, truth.beta, grid),
            grid,
        )
        # measured -0.13% (1A) and -0.19% (2A): pixels at the band ends straddle the edges
        assert_allclose(total, expected, rtol=0.005)


def test_line_flux_is_conserved():
    line = EmissionLine(5.3402, 1.0e-3, "[FeII]")
    simulated = quiet_simulation(
        noise=False,
        continuum=lambda w: 0.0 * w,
        lines=(line,),
        background=None,
        bad_pixel_fraction=0,
    )
    total, geometry = _light_in_band(simulated)[1]
    enclosed = _enclosed(simulated.truth.psf, geometry, 0.0, 0.0, line.wavelength)
    assert_allclose(total, line.flux * enclosed, rtol=0.002)  # measured -0.05%
    assert _light_in_band(simulated)[2][0] == 0.0
    # the truth's instrumental-resolution spectrum integrates to the line flux too
    grid = np.linspace(5.30, 5.38, 4001)
    assert_allclose(np.trapezoid(simulated.truth.flux(grid, "1A"), grid), line.flux, rtol=1e-6)


def test_noise_matches_the_variances(mrs_noisy):
    simulated, _ = mrs_noisy
    truth = simulated.truth
    rate = simulated.rate
    usable = (rate.dq & 1) == 0
    usable[tuple(truth.cosmic_rays.T)] = False
    pulls = (rate.data[usable] - truth.rate[usable]) / rate.err[usable]
    # VAR_POISSON comes from the measured slope (as in ramp fitting): upward fluctuations
    # get slightly larger errors, hence a small negative mean pull (allowed: 0.03)
    assert_honest_pulls(pulls, systematic=0.03)


def test_bad_pixels_and_cosmic_rays():
    simulated = quiet_simulation(seed=4, cosmic_rays=20, bad_pixel_fraction=2e-3)
    truth, rate = simulated.truth, simulated.rate
    assert np.all(rate.dq[truth.bad_pixels] & 1)
    assert np.all((rate.dq[~truth.bad_pixels] & 1) == 0)
    assert np.all((simulated.background.dq & 1) == (rate.dq & 1))
    hits = tuple(truth.cosmic_rays.T)
    assert truth.cosmic_rays.shape == (20, 2)
    assert np.all(rate.dq[hits] == 0)
    assert np.all(rate.data[hits] - truth.rate[hits] > 50 * rate.err[hits])
    assert 0.001 < truth.bad_pixels.mean() < 0.003


def test_extended_emission_adds_surface_brightness():
    extended = ExtendedEmission(peak=30.0, sigma_alpha=5.0, sigma_beta=5.0, spectral_index=0.0)
    plain = quiet_simulation(noise=False, bad_pixel_fraction=0)
    with_extended = quiet_simulation(noise=False, bad_pixel_fraction=0, extended=extended)
    difference = with_extended.truth.surface_brightness - plain.truth.surface_brightness
    on_slices = np.isfinite(difference)
    # a 5-arcsec Gaussian is nearly flat over the 1A field: 30 MJy/sr at the centre
    assert 27.0 < np.max(difference[on_slices]) <= 30.0
    assert_allclose(
        with_extended.truth.source_surface_brightness, plain.truth.source_surface_brightness
    )


def test_fringes_in_the_reference_and_the_slopes(mrs_noiseless):
    simulated, _ = mrs_noiseless
    truth = simulated.truth
    on_slices = np.isfinite(truth.surface_brightness)
    assert 0.09 < np.max(np.abs(truth.fringe[on_slices] - 1)) <= 0.1
    assert np.array_equal(simulated.fringe.data, truth.fringe.astype(np.float32))
    assert_allclose(simulated.photom.pixsiz[on_slices], truth.pixel_area[on_slices], rtol=1e-6)


def test_real_geometry_simulation_calibrates_exactly(real_mrs_dir, tmp_path):
    from mirispec_steps import MrsCalibrateStep

    simulated = quiet_simulation(
        detector="MIRIFULONG",
        band="LONG",
        reference_dir=real_mrs_dir,
        noise=False,
        bad_pixel_fraction=0,
        alpha=0.5,
        beta=-0.3,
    )
    files = simulated.write(tmp_path)
    truth = simulated.truth
    assert truth.band_names == ["3C", "4C"]
    result = MrsCalibrateStep.call(
        simulated.rate,
        background=str(files["background"]),
        override_photom=str(files["photom"]),
        override_fringe=str(files["fringe"]),
    )
    on_slices = np.isfinite(truth.surface_brightness)
    assert on_slices.sum() > 300_000
    scale = np.abs(truth.surface_brightness) + truth.background
    error = np.abs(result.data - truth.surface_brightness) / scale
    assert np.max(error[on_slices]) < 1e-6


def test_mrsmaps_round_trip(mrs_noiseless, tmp_path):
    simulated, _ = mrs_noiseless
    path = write_mrs_maps(simulated.rate, tmp_path / "maps.asdf")
    from_wcs = mrs_geometry(simulated.rate)
    from_maps = load_mrs_maps(path, simulated.rate)
    assert [g.name for g in from_maps] == [g.name for g in from_wcs]
    for wcs_geometry, maps_geometry in zip(from_wcs, from_maps, strict=True):
        for name in ("y", "x", "slice_number", "alpha", "wavelength", "alpha_low", "beta"):
            assert np.array_equal(getattr(wcs_geometry, name), getattr(maps_geometry, name))
        assert maps_geometry.slice_width == wcs_geometry.slice_width
    bare = simulated.rate.copy()
    bare.meta.wcs = None
    assert mrs_geometry(bare, maps=path)[0].alpha.size == from_wcs[0].alpha.size


def test_mrsmaps_errors(mrs_noiseless, tmp_path):
    import asdf

    simulated, _ = mrs_noiseless
    path = write_mrs_maps(simulated.rate, tmp_path / "maps.asdf")
    other = simulated.rate.copy()
    other.meta.instrument.band = "MEDIUM"
    with pytest.raises(ReferenceFileError, match="maps.asdf is for MIRIFUSHORT band A"):
        load_mrs_maps(path, other)
    with asdf.open(path) as handle:
        tree = {k: handle.tree[k] for k in ("reftype", "detector", "band", "shape")}
        channel = dict(handle.tree["channels"]["1"])
        channel.pop("alpha_low")
        tree["channels"] = {"1": channel}
        asdf.AsdfFile(tree).write_to(tmp_path / "broken_maps.asdf")
    with pytest.raises(
        ReferenceFileError, match="broken_maps.asdf, channel 1: missing key 'alpha_low'"
    ):
        load_mrs_maps(tmp_path / "broken_maps.asdf")
