"""MRS PSF self-calibration and mrs_psf: the core fit, and accuracy on PSFs the package lacks.

Every accuracy test here names the PSF that simulated the data (a family of
:mod:`mirispec_steps.simulate.mrs_psf`) and the one that extracted it (the
packaged analytic ``mrspsf``, calibrated on the exposure unless said
otherwise). Only ``test_true_psf_cube_is_exact`` extracts with the PSF that
simulated the data, and says so.
"""

import logging

import numpy as np
import pytest
from conftest import REAL_MRS_DIR, assert_honest_pulls, calibrated_mrs
from numpy.testing import assert_allclose
from scipy.special import ndtr

from mirispec_steps import MrsCentroidStep, MrsExtractStep, MrsPsfStep
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.core.psf import MrsPsf
from mirispec_steps.mrs.core.psf_calibration import (
    CorrectedPsf,
    CorrectionGrid,
    PsfSamples,
    calibrate_psf,
    node_weights,
)
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.mrs.references import load_mrs_psf, write_mrs_psf
from mirispec_steps.simulate.mrs_psf import (
    MISMATCHED_MRS_FAMILIES,
    DiffractionMrsPsf,
    light_outside_field,
)

#: The issue's accuracy bounds: median and p10..p90 of FLUX / truth - 1 over each band.
MEDIAN_BOUND = 0.005
SPREAD_BOUND = 0.005

# ---------------------------------------------------------------- the core


@pytest.mark.parametrize("seed", range(3))
def test_basis_integrals_match_quadrature(seed):
    grid = CorrectionGrid()
    rng = np.random.default_rng(seed)
    low = rng.uniform(-9.0, 7.0, 40)
    high = low + rng.uniform(0.01, 3.0, 40)
    x = np.linspace(-8.0, 8.0, 160001)
    values = grid.values(x)
    expected = []
    for a, b in zip(low, high, strict=True):
        inside = (x >= a) & (x <= b)
        expected.append(np.trapezoid(values[inside], x[inside], axis=0) if inside.sum() > 1
                        else np.zeros(grid.n_basis))  # fmt: skip
    assert_allclose(grid.integrals(low, high), np.array(expected), atol=2e-4)
    window, start = grid.window_integrals(low, high)
    dense = np.zeros((low.size, grid.n_basis))
    for column in range(window.shape[1]):
        dense[np.arange(low.size), start + column] += window[:, column]
    assert_allclose(dense, grid.integrals(low, high), atol=1e-14)
    assert_allclose(grid.integrals(np.array([-20.0]), np.array([20.0]))[0], grid.totals)


def test_node_weights_interpolate_linearly():
    weights = node_weights(np.array([4.0, 5.0, 5.25, 6.0, 9.0]), np.array([5.0, 6.0]))
    assert_allclose(weights, [[1, 0], [1, 0], [0.75, 0.25], [0, 1], [0, 1]])
    assert_allclose(node_weights(np.array([1.0, 2.0]), np.array([3.0])), [[1], [1]])


def _gaussian_samples(sigma_true, sigma_reference, weight, n_bins=300, seed=1, pedestal=0.0,
                      noise=False):  # fmt: skip
    """
    A Gaussian source (FWHM 1 along v) seen through pixels of 0.6 x 0.6 FWHM.

    Each bin's pixels tile the square |u|, |v| < 3.3 once, at a pixel phase of
    its own (as an exposure's bins see the source at other phases). Data from
    ``sigma_true`` along u, the reference has ``sigma_reference``.
    """
    rng = np.random.default_rng(seed)
    edges = np.arange(-3.3, 3.3001, 0.6)
    phase = rng.uniform(-0.3, 0.3, (n_bins, 2))
    low_u = (edges[:-1][None, :, None] + phase[:, 0, None, None]) * np.ones((1, 1, 11))
    low_v = (edges[:-1][None, None, :] + phase[:, 1, None, None]) * np.ones((1, 11, 1))
    low = np.stack([low_u.ravel(), low_v.ravel()])
    high = low + 0.6

    def share(sigma_u):
        sigma_v = 0.4247
        return (ndtr(high[0] / sigma_u) - ndtr(low[0] / sigma_u)) * (
            ndtr(high[1] / sigma_v) - ndtr(low[1] / sigma_v)
        )

    bins = np.repeat(np.arange(n_bins), 121)
    area = np.full(bins.size, 0.36)
    data = 5.0 * share(sigma_true) + pedestal * area
    if noise:
        data = data + rng.standard_normal(bins.size) / np.sqrt(weight)
    samples = PsfSamples(
        bins, data, np.full(bins.size, float(weight)), share(sigma_reference),
        np.ones(bins.size), low[0], high[0], low[1], high[1], n_bins,
    )  # fmt: skip
    return samples


def test_calibration_recovers_fluxes_under_a_wrong_reference():
    """Data: Gaussian of sigma 0.4247 FWHM units; reference 10% wider along u."""
    samples = _gaussian_samples(0.4247, 0.467, 1e6)
    result = calibrate_psf(samples)
    reference = np.median(result.reference_flux) / 5.0 - 1
    assert abs(reference) > 0.02  # the mismatch matters
    assert_allclose(result.flux, 5.0, rtol=5e-4)
    assert_allclose(np.median(result.flux), 5.0, rtol=5e-5)
    assert result.chi_square < 1e-4 * result.reference_chi_square
    assert 1 < result.iterations <= 8


def test_calibration_fits_a_background_with_the_flux():
    samples = _gaussian_samples(0.4247, 0.467, 1e6, pedestal=0.2)
    without = calibrate_psf(samples)
    samples.area = np.full(samples.bins.size, 0.36)
    with_background = calibrate_psf(samples)
    assert abs(np.median(without.flux) / 5.0 - 1) > 0.05  # the pedestal spoils the PSF
    assert_allclose(with_background.flux, 5.0, rtol=1e-3)


def _box_share(sigmas, weights, u_low, u_high, v_low, v_high):
    """Light of a sum of round Gaussians (centred) on the rectangles given."""
    return sum(
        weight
        * (ndtr(u_high / sigma) - ndtr(u_low / sigma))
        * (ndtr(v_high / sigma) - ndtr(v_low / sigma))
        for sigma, weight in zip(sigmas, weights, strict=True)
    )


def test_light_lost_over_the_field_edge_is_read_mirrored():
    """A source 0.8 and 0.5 FWHM off the centre of a 6 x 6 field: truth a Gaussian core with a
    6% halo three times wider, reference a single Gaussian 8% wider than the core (no halo).
    The halo light lost over the near edges is seen, mirrored, on the far side; only the light
    beyond the field's symmetric hull (0.12%) is left to the reference. Without the mirror the
    calibration takes all the lost light from the reference (none): -0.53%."""
    truth = ((0.4247, 1.3), (0.94, 0.06))
    reference = ((0.4247 * 1.08,), (1.0,))
    source_alpha, source_beta, half = 0.8, -0.5, 3.0
    rng = np.random.default_rng(3)
    n_bins = 200
    width = rng.uniform(0.8, 1.25, n_bins)  # the FWHM changes with wavelength: pixel phases
    alpha_edges, beta_edges = np.linspace(-half, half, 13), np.linspace(-half, half, 11)
    a0, b0 = np.meshgrid(alpha_edges[:-1], beta_edges[:-1])
    a1, b1 = np.meshgrid(alpha_edges[1:], beta_edges[1:])
    bins = np.repeat(np.arange(n_bins), a0.size)
    scale = width[bins]
    u_low, u_high = (np.tile(a0.ravel(), n_bins) - source_alpha) / scale, \
        (np.tile(a1.ravel(), n_bins) - source_alpha) / scale  # fmt: skip
    v_low, v_high = (np.tile(b0.ravel(), n_bins) - source_beta) / scale, \
        (np.tile(b1.ravel(), n_bins) - source_beta) / scale  # fmt: skip
    # Share of each footprint's mirror image through the source outside the field.
    image = [np.clip(np.minimum(-low, (half - centre) / scale) - np.maximum(
                -high, (-half - centre) / scale), 0, None) / (high - low)
             for low, high, centre in ((u_low, u_high, source_alpha),
                                       (v_low, v_high, source_beta))]  # fmt: skip
    samples = PsfSamples(
        bins, 5.0 * _box_share(*truth, u_low, u_high, v_low, v_high), np.full(bins.size, 1e6),
        _box_share(*reference, u_low, u_high, v_low, v_high), np.ones(bins.size),
        u_low, u_high, v_low, v_high, n_bins, mirror_unseen=1.0 - image[0] * image[1],
    )  # fmt: skip

    def outside(psf, mirrored):
        """Mean over bins of the light outside the field (or its symmetric hull)."""
        field = [(-half - source_alpha) / width, (half - source_alpha) / width,
                 (-half - source_beta) / width, (half - source_beta) / width]  # fmt: skip
        inside = _box_share(*psf, *field)
        if mirrored:  # union: the field, its image, less their overlap
            overlap = [
                np.maximum(field[0], -field[1]), np.minimum(field[1], -field[0]),
                np.maximum(field[2], -field[3]), np.minimum(field[3], -field[2]),
            ]  # fmt: skip
            inside = 2 * inside - _box_share(*psf, *overlap)
        return float(np.mean(1.0 - inside))

    bias = {}
    for mirrored in (True, False):
        if not mirrored:
            samples.mirror_unseen = None
        bias[mirrored] = np.median(calibrate_psf(samples).flux) / 5.0 - 1.0
        expected = outside(reference, mirrored) - outside(truth, mirrored)
        # Measured -0.096% against -0.119% (mirrored), -0.533% against -0.533% (not).
        assert abs(bias[mirrored] - expected) < 5e-4, (mirrored, bias[mirrored], expected)
    assert bias[False] < -0.004 and abs(bias[True]) < 0.25 * abs(bias[False]), bias


def test_calibration_rejects_a_spike():
    samples = _gaussian_samples(0.4247, 0.467, 1e4, noise=True)
    clean = calibrate_psf(samples)
    core = np.flatnonzero((np.abs(samples.u_low) < 0.3) & (np.abs(samples.v_low) < 0.3))[:3]
    samples.data = samples.data.copy()
    samples.data[core] += 2.0
    spiked = calibrate_psf(samples)
    assert spiked.n_rejected >= 3
    assert_allclose(np.median(spiked.flux), np.median(clean.flux), rtol=2e-4)
    assert_allclose(np.median(clean.flux), 5.0, rtol=5e-3)


def test_matched_reference_gains_only_noise_and_errors_are_honest():
    """Data simulated and fitted with the same Gaussian (matched case): the correction fits noise.

    The chi-square it gains stays within 5 sigma of its effective parameters, and the common
    flux shift it causes, in units of its claimed flux error, has an RMS near 1 over 12 draws
    (0.91 measured; the bounds are chi-square tails of probability below 1%).
    """
    shifts = []
    for seed in range(12):
        samples = _gaussian_samples(0.4247, 0.4247, 1e4, noise=True, seed=seed)
        result = calibrate_psf(samples)
        gained = result.reference_chi_square - result.chi_square
        edf = result.effective_parameters
        assert gained < edf + 5 * np.sqrt(2 * edf)
        relative_error = np.median(result.flux_error / result.flux)
        shifts.append(np.median(result.flux / result.reference_flux - 1) / relative_error)
    assert 0.5 < np.sqrt(np.mean(np.square(shifts))) < 1.5


def test_corrected_psf_is_the_reference_plus_the_correction():
    reference = MrsPsf()
    grid = CorrectionGrid()
    coefficients = np.zeros((2, grid.n_basis, grid.n_basis))
    coefficients[1, 10, 11] = 0.05
    psf = CorrectedPsf(reference, grid, coefficients, np.array([5.0, 6.0]))
    edges = (np.array([-0.1]), np.array([0.1]), np.array([-0.05]), np.array([0.12]))
    at_first = psf.footprint_fraction(*edges, 0.0, 0.0, np.array([5.0]))
    at_second = psf.footprint_fraction(*edges, 0.0, 0.0, np.array([6.0]))
    halfway = psf.footprint_fraction(*edges, 0.0, 0.0, np.array([5.5]))
    assert_allclose(at_first, reference.footprint_fraction(*edges, 0.0, 0.0, np.array([5.0])))
    assert not np.allclose(at_second, reference.footprint_fraction(*edges, 0, 0, np.array([6.0])))
    # Half way between the nodes: half the second node's correction (in coordinates scaled
    # by the FWHM at 5.5 um).
    second_only = CorrectedPsf(reference, grid, coefficients[1])
    correction = psf.correction_fraction(*edges, 0.0, 0.0, np.array([5.5]))
    assert_allclose(
        correction, 0.5 * second_only.correction_fraction(*edges, 0, 0, np.array([5.5]))
    )
    assert_allclose(
        halfway, reference.footprint_fraction(*edges, 0, 0, np.array([5.5])) + correction
    )
    # A correction integrates to its coefficients' weighted sum over a footprint covering all.
    everything = (np.array([-50.0]), np.array([50.0]), np.array([-50.0]), np.array([50.0]))
    total = psf.correction_fraction(*everything, 0.0, 0.0, np.array([6.0]))
    assert_allclose(total, 0.05 * grid.totals[10] * grid.totals[11])


# ---------------------------------------------------------------- accuracy, noise-free

_CACHE = {}


def _centred(tmp_path_factory, family, detector, band, flight):
    """Simulated (family PSF), calibrated and centroided exposure, cached per case."""
    key = (family, detector, band, flight)
    if key not in _CACHE:
        folder = tmp_path_factory.mktemp(f"{family}_{band}")
        extra = {"reference_dir": REAL_MRS_DIR} if flight else {}
        simulated, calibrated = calibrated_mrs(
            folder, detector=detector, band=band, psf=MISMATCHED_MRS_FAMILIES[family](),
            noise=False, bad_pixel_fraction=0.0, alpha=0.3, beta=-0.2, seed=1, **extra,
        )  # fmt: skip
        _CACHE[key] = (simulated, MrsCentroidStep.call(calibrated))
    return _CACHE[key]


def _ratios(x1d, simulated):
    result = {}
    for spec in x1d.spec:
        table = spec.spec_table
        truth = simulated.truth.flux(table["WAVELENGTH"], spec.name)
        result[spec.name] = (np.asarray(table["WAVELENGTH"]), table["FLUX"] / truth - 1.0)
    return result


def _unseen_light_bias(simulated, model, name, wavelength, mirrored=True):
    """Flux bias the light no measurement sees causes: reference's share minus the truth's.

    The calibration reads the light over the field's far side, mirrored through the source, for
    the light lost over the near side: what neither sees lies beyond the field's symmetric hull
    (``mirrored``); without the mirror, beyond the field itself.
    """
    geometry = next(g for g in mrs_geometry(model) if g.name == name)
    reference = MrsPsf()
    samples = np.linspace(wavelength.min(), wavelength.max(), 5)[1:-1]
    bias = [
        light_outside_field(reference, geometry, 0.3, -0.2, value, mirrored)
        - light_outside_field(simulated.truth.psf, geometry, 0.3, -0.2, value, mirrored)
        for value in samples
    ]
    return float(np.mean(bias))


CASES = [
    ("diffraction", "MIRIFUSHORT", "SHORT", False),
    ("moffat", "MIRIFUSHORT", "SHORT", False),
    ("gaussian_variant", "MIRIFUSHORT", "SHORT", False),
    ("diffraction", "MIRIFULONG", "SHORT", False),
    ("moffat", "MIRIFULONG", "SHORT", False),
    ("diffraction", "MIRIFUSHORT", "SHORT", True),
    ("moffat", "MIRIFULONG", "LONG", True),
    ("diffraction", "MIRIFULONG", "LONG", True),
]


@pytest.mark.parametrize(("family", "detector", "band", "flight"), CASES)
def test_mismatched_psf_accuracy(tmp_path_factory, family, detector, band, flight):
    """Simulated with ``family``, extracted with the packaged analytic PSF, psf=auto (default).

    The light beyond the field's symmetric hull is the one thing no measurement sees: the
    extraction takes it from its reference. The bounds hold around zero and around the bias
    that causes (``_unseen_light_bias``, below 0.06% here). The light beyond the field itself
    (0.2-0.6% for the diffraction family, below 0.2% for the packaged model) is read, mirrored,
    on the field's far side: before that it biased 4C by -0.51% and put p10 of 2A and 3A
    beyond -0.5%.
    """
    simulated, centred = _centred(tmp_path_factory, family, detector, band, flight)
    for method in ("optimal", "aperture"):
        x1d = MrsExtractStep.call(centred, method=method)
        for spec in x1d.spec:
            record = x1d.mirispec_extraction.instance["channels"][spec.name[0]]["psf"]
            assert record["used"] == "empirical", record
        reference = _ratios(MrsExtractStep.call(centred, method=method, psf="reference"),
                            simulated)  # fmt: skip
        for name, (wavelength, ratio) in _ratios(x1d, simulated).items():
            floor = _unseen_light_bias(simulated, centred, name, wavelength)
            assert abs(floor) < 0.001, (name, floor)  # a physical bias, never a free allowance
            median = np.nanmedian(ratio)
            p10, p90 = np.nanpercentile(ratio, [10, 90])
            label = f"{family} {method} {name}: median {median:+.4f}, p10..p90 " \
                    f"{p10:+.4f}..{p90:+.4f}, unseen-light bias {floor:+.4f}"  # fmt: skip
            for centre in (0.0, floor):
                assert abs(median - centre) <= MEDIAN_BOUND, label
                assert centre - SPREAD_BOUND <= p10 and p90 <= centre + SPREAD_BOUND, label
            # ... where the reference alone is off by at least twice the bound.
            assert np.nanpercentile(np.abs(reference[name][1]), 90) > 2 * SPREAD_BOUND, name


def test_true_psf_cube_is_exact(tmp_path_factory, tmp_path):
    """Simulated with the diffraction family, extracted with that very PSF as a cube (matched)."""
    simulated, centred = _centred(tmp_path_factory, "diffraction", "MIRIFUSHORT", "SHORT", False)
    psf = simulated.truth.psf
    assert isinstance(psf, DiffractionMrsPsf)
    bands = {}
    for geometry in mrs_geometry(centred):
        low, high = np.nanmin(geometry.wavelength), np.nanmax(geometry.wavelength)
        bands[geometry.name] = psf.mrspsf_entry(low, high)
    cube_file = write_mrs_psf(tmp_path / "true_mrspsf.asdf", bands, "cube")
    for method in ("optimal", "aperture"):
        for mode in ("reference", "auto"):
            x1d = MrsExtractStep.call(
                centred, method=method, psf=mode, override_mrspsf=str(cube_file)
            )
            for name, (_, ratio) in _ratios(x1d, simulated).items():
                assert np.nanmax(np.abs(np.nanpercentile(ratio, [10, 50, 90]))) < 0.001, (
                    method, mode, name)  # fmt: skip


def test_band_end_bins_take_no_shape_from_the_psf_wings(tmp_path):
    """Diffraction family simulated, the packaged analytic PSF extracting (mismatched), no noise.

    The first pass's samples beyond a band's ends see a sliver of the PSF (its far wings,
    where the model is most wrong): at this position one of them read several times the flux
    and, shaping 3A's first bin, put it 156% above the others (before the coverage cut). The
    end bins must be as good as their neighbours.
    """
    simulated, calibrated = calibrated_mrs(
        tmp_path, detector="MIRIFULONG", band="SHORT", psf=MISMATCHED_MRS_FAMILIES["diffraction"](),
        noise=False, bad_pixel_fraction=0.0, alpha=0.45, beta=0.32, lines=(), seed=1,
    )  # fmt: skip
    x1d = MrsExtractStep.call(MrsCentroidStep.call(calibrated), psf="reference")
    for name, (_, ratio) in _ratios(x1d, simulated).items():
        ends = np.concatenate([ratio[:2], ratio[-2:]])
        interior = np.nanmedian(ratio[2:-2])
        assert np.all(np.abs(ends - interior) < 0.03), (name, ends, interior)


# ---------------------------------------------------------------- noise


@pytest.fixture(scope="module")
def noisy_moffat(tmp_path_factory):
    """Moffat-family source at bin S/N ~100 (1A/2A, built-in geometry), centroided."""
    simulated, calibrated = calibrated_mrs(
        tmp_path_factory.mktemp("noisy_moffat"), psf=MISMATCHED_MRS_FAMILIES["moffat"](), lines=(),
        continuum=lambda w: 0.0004 * (w / 10.0) ** 1.5, alpha=0.3, beta=-0.2, seed=5,
    )  # fmt: skip
    return simulated, MrsCentroidStep.call(calibrated)


def test_noisy_pulls_and_optimal_beats_aperture(noisy_moffat):
    """Pulls of FLUX_ERROR (statistical) with unit scatter; their mean may be offset by the
    calibrated PSF's own flux uncertainty, which is common to all bins (recorded in the
    product as ``psf_flux_error``), up to twice its ratio to a bin's error."""
    simulated, centred = noisy_moffat
    signal_to_noise = {}
    every_pull = []
    for method in ("optimal", "aperture"):
        x1d = MrsExtractStep.call(centred, method=method)
        for spec in x1d.spec:
            table = spec.spec_table
            truth = simulated.truth.flux(table["WAVELENGTH"], spec.name)
            pulls = (table["FLUX"] - truth) / table["FLUX_ERROR"]
            record = x1d.mirispec_extraction.instance["channels"][spec.name[0]]["psf"]
            assert record["used"] == "empirical"
            common = record["psf_flux_error"] / np.nanmedian(table["FLUX_ERROR"] / table["FLUX"])
            assert common < 0.4
            assert_honest_pulls(pulls, systematic=2 * common, label=f"{method} {spec.name}")
            every_pull.append(pulls[np.isfinite(pulls)])
            signal_to_noise[method, spec.name] = np.nanmedian(table["FLUX"] / table["FLUX_ERROR"])
    # The 0.95-1.05, on all 2200 pulls (one band's 540 scatter by 0.03).
    assert np.std(np.concatenate(every_pull)) == pytest.approx(1.0, abs=0.05)
    for name in ("1A", "2A"):
        assert 60 < signal_to_noise["optimal", name]
        assert signal_to_noise["optimal", name] >= signal_to_noise["aperture", name]


def test_faint_source_auto_is_not_worse_than_the_reference(tmp_path):
    """Bin S/N ~10-20, Moffat family: the reference alone is ~30% off; auto calibrates and is
    far closer (RMS of FLUX / truth - 1 over the bins, noise included)."""
    simulated, calibrated = calibrated_mrs(
        tmp_path, psf=MISMATCHED_MRS_FAMILIES["moffat"](), lines=(),
        continuum=lambda w: 0.00004 * (w / 10.0) ** 1.5, alpha=0.3, beta=-0.2, seed=7,
    )  # fmt: skip
    errors = {}
    for mode in ("auto", "reference"):
        x1d = MrsExtractStep.call(calibrated, psf=mode, alpha=0.3, beta=-0.2)
        for spec in x1d.spec:
            table = spec.spec_table
            truth = simulated.truth.flux(table["WAVELENGTH"], spec.name)
            errors[mode, spec.name] = np.sqrt(np.nanmean((table["FLUX"] / truth - 1) ** 2))
            if mode == "auto":
                snr = np.nanmedian(table["FLUX"] / table["FLUX_ERROR"])
                assert 8 < snr < 25, snr
                record = x1d.mirispec_extraction.instance["channels"][spec.name[0]]["psf"]
                assert record["used"] == "empirical", record["reason"]
    for name in ("1A", "2A"):
        assert errors["auto", name] <= 0.5 * errors["reference", name], errors


def test_too_faint_to_calibrate(tmp_path, caplog):
    """Bin S/N ~1: auto keeps the reference with a warning; a forced calibration is an error."""
    _, calibrated = calibrated_mrs(
        tmp_path, psf=MISMATCHED_MRS_FAMILIES["moffat"](), lines=(),
        continuum=lambda w: 0.000004 * (w / 10.0) ** 1.5, alpha=0.3, beta=-0.2, seed=8,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mirispec_steps"):
        x1d = MrsExtractStep.call(calibrated, alpha=0.3, beta=-0.2)
    for spec in x1d.spec:
        record = x1d.mirispec_extraction.instance["channels"][spec.name[0]]["psf"]
        assert record["used"] == "reference"
    assert "using the reference PSF" in caplog.text
    with pytest.raises(InputDataError, match="psf='empirical' cannot be used"):
        MrsExtractStep.call(calibrated, alpha=0.3, beta=-0.2, psf="empirical")


def test_unknown_psf_mode_is_refused(mrs_noiseless):
    from stpipe.config_parser import ValidationError

    with pytest.raises(ValidationError, match="'psf'"):
        MrsExtractStep.call(mrs_noiseless[1]["rate"], psf="magic")


# ---------------------------------------------------------------- mrs_psf


DITHERS = [(0.6, 0.5), (-0.6, -0.5), (0.5, -0.6), (-0.5, 0.6)]


def _star(folder, alpha, beta, seed, psf=None, scale=0.05, fixed=False):
    """A bright star (no lines) simulated with the diffraction family, calibrated, centroided
    (or placed at its position, ``fixed``)."""
    _, calibrated = calibrated_mrs(
        folder, psf=psf or MISMATCHED_MRS_FAMILIES["diffraction"](), alpha=alpha, beta=beta,
        seed=seed, lines=(), continuum=lambda w: _star_continuum(w, scale),
    )  # fmt: skip
    calibrated.meta.filename = f"star{seed}_mrscal.fits"
    return MrsCentroidStep.call(calibrated, fixed_position=[alpha, beta] if fixed else None)


def _star_continuum(wavelength, scale=0.05):
    return scale * (wavelength / 10.0) ** 1.5


@pytest.fixture(scope="module")
def dithered_stars(tmp_path_factory):
    """A 4-point dither of a bright diffraction-family star, calibrated and centroided."""
    folder = tmp_path_factory.mktemp("stars")
    return [_star(folder / f"star{i}", a, b, 20 + i) for i, (a, b) in enumerate(DITHERS)]


@pytest.fixture(scope="module")
def dithered_star_psf(tmp_path_factory, dithered_stars):
    """mrs_psf, saving as strun does, on the dithered star."""
    output = tmp_path_factory.mktemp("mrs_psf") / "out"
    MrsPsfStep.call(dithered_stars, output_dir=str(output), save_results=True, save_plots=True)
    return output


def _star_spectrum(path, scale=0.05, flux_unit="Jy"):
    """The star's spectrum as an ECSV table (``scale`` times the simulated flux)."""
    from astropy.table import Table

    wavelength = np.linspace(4.5, 29.0, 500)
    table = Table({"WAVELENGTH": wavelength, "FLUX": _star_continuum(wavelength, scale)})
    table["WAVELENGTH"].unit, table["FLUX"].unit = "micron", flux_unit
    table.write(path, overwrite=True)
    return str(path)


def test_mrs_psf_from_a_dithered_star_calibrates_a_faint_source(dithered_star_psf, tmp_path):
    """Star and target both simulated with the diffraction family; the target, elsewhere in the
    field and faint, extracted with the measured cube (``psf=reference``) and self-calibrated on
    top of it (``auto``)."""
    written = sorted(path.name for path in dithered_star_psf.iterdir())
    assert written == ["star20_mrspsf.asdf", "star20_mrspsf.png"], written
    cube_file = str(dithered_star_psf / "star20_mrspsf.asdf")
    reference = load_mrs_psf(cube_file)
    assert reference.kind == "cube" and sorted(reference.bands) == ["1A", "2A"]
    simulated, calibrated = calibrated_mrs(
        tmp_path, psf=MISMATCHED_MRS_FAMILIES["diffraction"](), alpha=0.1, beta=0.25, seed=31,
        lines=(), continuum=lambda w: 0.001 * (w / 10.0) ** 1.5,
    )  # fmt: skip
    centred = MrsCentroidStep.call(calibrated)
    for method in ("optimal", "aperture"):
        packaged = _ratios(MrsExtractStep.call(centred, method=method, psf="reference"),
                           simulated)  # fmt: skip
        for mode in ("reference", "auto"):
            x1d = MrsExtractStep.call(centred, method=method, psf=mode, override_mrspsf=cube_file)
            for name, (_, ratio) in _ratios(x1d, simulated).items():
                median = np.nanmedian(ratio)
                assert abs(median) < MEDIAN_BOUND, (method, mode, name, median)
                assert abs(np.nanmedian(packaged[name][1])) > 0.03  # the packaged PSF is far off


def test_mrs_psf_cube_wings_hold_no_oscillation_the_slices_cannot_see(dithered_star_psf):
    """Star simulated with the diffraction family, cube measured by mrs_psf. Slices integrate
    across beta, so a correction oscillating across a slice's width in the faint wings is
    invisible to the data: only the prior can hold it down. Unscaled, it let stripes of
    -2% of the peak through beyond 3 FWHM (where the PSF holds a few thousandths); a PSF
    is nowhere that negative."""
    import asdf

    with asdf.open(dithered_star_psf / "star20_mrspsf.asdf", lazy_load=False) as cube_file:
        for band in ("1A", "2A"):
            planes = np.asarray(cube_file.tree["bands"][band]["data"])
            lowest = planes.min(axis=(1, 2)) / planes.max(axis=(1, 2))
            # Measured -0.24% (1A) and -0.45% (2A); the unscaled prior gave -0.43% and -2.1%.
            assert np.all(lowest > -6e-3), (band, lowest.min())


def test_mrs_psf_with_the_star_spectrum_measures_the_unseen_light(
    dithered_stars, dithered_star_psf, tmp_path
):
    """Star and faint target both simulated with the diffraction family. Without the star's
    spectrum the cube keeps the reference's light beyond the field (the diffraction family
    has another share there); with it, the cube's light share is measured and the bias goes."""
    spectrum = _star_spectrum(tmp_path / "star.ecsv")
    product = MrsPsfStep.call(dithered_stars, star_spectrum=spectrum)
    measured_file = tmp_path / "measured_mrspsf.asdf"
    product.save(measured_file)
    measured = load_mrs_psf(str(measured_file))
    for band in ("1A", "2A"):
        enclosed = measured.bands[band][0].enclosed
        # A measured share, a few 1e-3 from the reference's (which no fit without the
        # star's flux can tell), written per plane.
        assert np.all(np.abs(enclosed - 1.0) < 0.02) and np.ptp(enclosed) > 0, (band, enclosed)
        assert np.max(np.abs(enclosed - 1.0)) > 2e-4, (band, enclosed)
    simulated, calibrated = calibrated_mrs(
        tmp_path, psf=MISMATCHED_MRS_FAMILIES["diffraction"](), alpha=-1.0, beta=0.9, seed=31,
        lines=(), continuum=lambda w: 0.001 * (w / 10.0) ** 1.5, noise=False,
    )  # fmt: skip
    centred = MrsCentroidStep.call(calibrated)
    plain_file = str(dithered_star_psf / "star20_mrspsf.asdf")
    for method in ("optimal", "aperture"):
        with_spectrum = _ratios(
            MrsExtractStep.call(centred, method=method, override_mrspsf=str(measured_file)),
            simulated,
        )
        without = _ratios(
            MrsExtractStep.call(centred, method=method, override_mrspsf=plain_file), simulated
        )
        for name, (_, ratio) in with_spectrum.items():
            median, plain = np.nanmedian(ratio), np.nanmedian(without[name][1])
            label = f"{method} {name}: {median:+.4f} with the star spectrum, {plain:+.4f} without"
            assert abs(median) < 0.0015, label
            assert abs(median) < abs(plain), label


def test_star_spectrum_recovers_the_light_beyond_the_flight_4c_field(tmp_path):
    """Flight 3C/4C geometry, star and target simulated with the diffraction family, the target
    near the field's corner. The packaged PSF self-calibrated on the target reads the light
    lost over the near edges, mirrored, on the far side, and takes the light beyond that
    symmetric hull from the reference; a cube from a dithered star with its known spectrum
    measures that too."""
    flight = {"reference_dir": REAL_MRS_DIR, "detector": "MIRIFULONG", "band": "LONG"}
    stars = []
    for index, (alpha, beta) in enumerate(DITHERS):
        _, calibrated = calibrated_mrs(
            tmp_path / f"star{index}", psf=MISMATCHED_MRS_FAMILIES["diffraction"](),
            alpha=1.1 * alpha, beta=1.1 * beta, seed=60 + index, lines=(),
            continuum=_star_continuum, **flight,
        )  # fmt: skip
        calibrated.meta.filename = f"star{index}_mrscal.fits"
        stars.append(MrsCentroidStep.call(calibrated))
    product = MrsPsfStep.call(stars, star_spectrum=_star_spectrum(tmp_path / "star.ecsv"))
    cube_file = tmp_path / "star_mrspsf.asdf"
    product.save(cube_file)
    simulated, calibrated = calibrated_mrs(
        tmp_path / "target", psf=MISMATCHED_MRS_FAMILIES["diffraction"](), alpha=-1.0, beta=0.8,
        seed=70, lines=(), continuum=lambda w: 0.002 * (w / 10.0) ** 1.5, noise=False, **flight,
    )  # fmt: skip
    centred = MrsCentroidStep.call(calibrated)
    for method in ("optimal", "aperture"):
        packaged = _ratios(MrsExtractStep.call(centred, method=method), simulated)
        measured = _ratios(
            MrsExtractStep.call(centred, method=method, override_mrspsf=str(cube_file)),
            simulated,
        )
        for name, (_, ratio) in measured.items():
            median, plain = np.nanmedian(ratio), np.nanmedian(packaged[name][1])
            label = f"{method} {name}: {median:+.4f} with the star's cube, {plain:+.4f} without"
            # Measured -0.10% (3C) and -0.04% (4C). The target sees far wings no dither of
            # the star reached; with the star's unconstrained correction there, it was -0.6%.
            assert abs(median) < 0.002, label
            # Measured -0.34% (3C) and -0.02% (4C) with the light lost over the near edges
            # read on the far side; -1.2 to -1.4% when it was taken from the reference.
            assert abs(plain) < MEDIAN_BOUND, label
    # The star extracted with its own cube gets its spectrum back: the cube is the PSF the
    # calibration fitted (a cube renormalised apart from the fit was -0.5 to -0.7% off).
    own = MrsExtractStep.call(stars[0], psf="reference", override_mrspsf=str(cube_file))
    for spec in own.spec:
        table = spec.spec_table
        ratio = table["FLUX"] / _star_continuum(np.asarray(table["WAVELENGTH"])) - 1.0
        assert abs(np.nanmedian(ratio)) < 0.001, (spec.name, np.nanmedian(ratio))


def test_mrs_psf_refuses_a_mismatched_star_spectrum(dithered_stars, tmp_path):
    """A spectrum in the wrong units, of another star, or without the columns: a clear error."""
    wrong_units = _star_spectrum(tmp_path / "mjy.ecsv", flux_unit="mJy")
    with pytest.raises(InputDataError, match="times the star spectrum"):
        MrsPsfStep.call(dithered_stars[:1], star_spectrum=wrong_units)
    other_star = _star_spectrum(tmp_path / "other.ecsv", scale=0.2)
    with pytest.raises(InputDataError, match="is it this star's spectrum"):
        MrsPsfStep.call(dithered_stars[:1], star_spectrum=other_star)
    (tmp_path / "columns.ecsv").write_text(
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: wave, datatype: float64}\nwave\n5.0\n"
    )
    with pytest.raises(InputDataError, match="needs columns WAVELENGTH and FLUX"):
        MrsPsfStep.call(dithered_stars[:1], star_spectrum=str(tmp_path / "columns.ecsv"))
    with pytest.raises(InputDataError, match="cannot be read"):
        MrsPsfStep.call(dithered_stars[:1], star_spectrum=str(tmp_path / "missing.ecsv"))


def test_mrs_psf_plot_is_written(dithered_star_psf):
    from PIL import Image

    with Image.open(dithered_star_psf / "star20_mrspsf.png") as image:
        width, height = image.size
    assert width > 800 and height > 500


def test_mrs_psf_refuses_bad_stars(tmp_path):
    """Too faint, saturated, extended, two sources: a clear error and nothing written."""
    output = tmp_path / "out"
    faint = _star(tmp_path / "faint", 0.2, 0.1, 40, scale=0.00005, fixed=True)
    with pytest.raises(InputDataError, match="below min_snr"):
        MrsPsfStep.call(faint, output_dir=str(output), save_results=True)
    bright = _star(tmp_path / "bright", 0.2, 0.1, 41)
    saturated = bright.copy()
    geometry = mrs_geometry(saturated)[0]
    core = np.hypot(0.5 * (geometry.alpha_low + geometry.alpha_high) - 0.2,
                    0.5 * (geometry.beta_low + geometry.beta_high) - 0.1) < 0.15  # fmt: skip
    saturated.dq[geometry.y[core], geometry.x[core]] |= 2  # SATURATED
    with pytest.raises(InputDataError, match="saturated"):
        MrsPsfStep.call(saturated, output_dir=str(output), save_results=True)
    wide = _star(
        tmp_path / "wide", 0.2, 0.1, 42, psf=MrsPsf(fwhm_slope=0.08, fwhm_offset=0.4), fixed=True
    )
    with pytest.raises(InputDataError, match="extended"):
        MrsPsfStep.call(wide, output_dir=str(output), save_results=True)
    _, companion = calibrated_mrs(
        tmp_path / "companion", psf=MISMATCHED_MRS_FAMILIES["diffraction"](), alpha=-0.7,
        beta=-0.6, seed=43, lines=(), continuum=lambda w: 0.02 * (w / 10.0) ** 1.5,
    )  # fmt: skip
    pair = bright.copy()
    pair.data = bright.data + companion.data
    with pytest.raises(InputDataError, match="second peak"):
        MrsPsfStep.call(pair, output_dir=str(output), save_results=True)
    assert not output.exists() or not any(output.iterdir())
    no_centroid = calibrated_mrs(tmp_path / "plain", seed=44)[1]
    with pytest.raises(InputDataError, match="run mrs_centroid first"):
        MrsPsfStep.call(no_centroid)


def test_a_calibration_is_reused_for_identical_data_only(noisy_moffat):
    """Both methods on one exposure share its calibration; other data get their own."""
    from mirispec_steps.mrs import psf_choice

    _, centred = noisy_moffat
    first = MrsExtractStep.call(centred, method="optimal")
    kept = dict(psf_choice._CACHE)
    second = MrsExtractStep.call(centred, method="aperture")
    assert dict(psf_choice._CACHE).keys() == kept.keys()  # nothing new was calibrated
    again = MrsExtractStep.call(centred, method="optimal")
    for spec, repeat in zip(first.spec, again.spec, strict=True):
        assert_allclose(repeat.spec_table["FLUX"], spec.spec_table["FLUX"], rtol=0, atol=0)
    assert len(second.spec) == len(first.spec)
    changed = centred.copy()
    changed.data = changed.data * 1.01
    MrsExtractStep.call(changed, method="optimal")
    assert len(set(psf_choice._CACHE) - set(kept)) == len(first.spec)
