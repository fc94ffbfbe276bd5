"""Dither combination and band stitching (``mirispec_steps.mrs.core.combine``) on known truth."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_honest_pulls
from numpy.testing import assert_allclose

from mirispec_steps.mrs.core.combine import combine_dithers, stitch_bands


def _dithers(n_dithers=4, n_bins=1500, seed=1, low=5.0, high=5.8):
    """Noisy spectra of a smooth truth with errors that differ per dither and bin."""
    rng = np.random.default_rng(seed)
    wavelength = np.linspace(low, high, n_bins)
    truth = 0.02 * (wavelength / 5.0) ** 1.5
    error = truth * rng.uniform(0.005, 0.02, (n_dithers, n_bins))
    flux = truth + error * rng.standard_normal((n_dithers, n_bins))
    return wavelength, truth, flux, error


@pytest.mark.parametrize("n_dithers", [2, 4, 8])
def test_combination_is_the_weighted_mean_with_honest_errors(n_dithers):
    wavelength, truth, flux, error = _dithers(n_dithers)
    band = combine_dithers(flux, error, wavelength)
    assert all(not check.excluded for check in band.checks)
    assert_honest_pulls((band.flux - truth) / band.error, label=f"{n_dithers} dithers")
    weight = 1.0 / error**2
    expected = (weight * flux).sum(axis=0) / weight.sum(axis=0)
    unclipped = band.n_input == n_dithers
    assert unclipped.mean() > 0.99
    assert_allclose(band.flux[unclipped], expected[unclipped], rtol=1e-12)
    assert_allclose(band.error[unclipped], 1.0 / np.sqrt(weight.sum(axis=0))[unclipped])


def test_single_outliers_are_clipped_per_bin():
    wavelength, truth, flux, error = _dithers(4, seed=2)
    hits = np.arange(10, 1500, 97)
    flux[2, hits] += 50 * error[2, hits]
    band = combine_dithers(flux, error, wavelength)
    assert np.all(band.clipped[2, hits]) and np.all(band.n_input[hits] == 3)
    assert not any(check.excluded for check in band.checks)
    assert_honest_pulls((band.flux - truth) / band.error, label="after clipping")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("scale", "times the other dithers'"),
        ("noise", "corrupted"),
        ("empty", "data in only"),
    ],
)
def test_a_bad_dither_is_reported_and_left_out(damage, reason):
    """A 3% scale offset (a pointing error for a fixed aperture), a corrupted exposure (residuals
    six times its errors), or a dither mostly without data."""
    wavelength, truth, flux, error = _dithers(4, seed=3)
    rng = np.random.default_rng(4)
    if damage == "scale":
        flux[1] *= 0.97
    elif damage == "noise":
        flux[1] = truth + 6 * error[1] * rng.standard_normal(truth.size)
    else:
        flux[1, 300:] = np.nan
    band = combine_dithers(flux, error, wavelength)
    excluded = [i for i, check in enumerate(band.checks) if check.excluded]
    assert excluded == [1], [check.reason for check in band.checks]
    assert reason in band.checks[1].reason
    assert np.all(band.n_input <= 3)
    assert_honest_pulls((band.flux - truth) / band.error, label=damage)


def test_two_disagreeing_dithers_are_reported_not_judged():
    wavelength, truth, flux, error = _dithers(2, seed=5)
    flux[1] *= 0.95
    band = combine_dithers(flux, error, wavelength)
    assert not any(check.excluded for check in band.checks)
    assert_allclose([check.ratio for check in band.checks], [1 / 0.95, 0.95], rtol=3e-3)


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="do not match"):
        combine_dithers(np.ones((2, 5)), np.ones((2, 4)), np.arange(5.0))


def _band(low, high, level=1.0, seed=1):
    wavelength, truth, flux, error = _dithers(4, 800, seed, low, high)
    return truth, combine_dithers(flux * level, error * level, wavelength)


@pytest.mark.parametrize("overlap", ["cut", "average"])
def test_stitching_joins_bands_over_the_full_range(overlap):
    parts = {"1A": _band(4.9, 5.74, seed=1), "1B": _band(5.66, 6.63, seed=2),
             "1C": _band(6.53, 7.65, seed=3)}  # fmt: skip
    joined = stitch_bands({name: band for name, (_, band) in parts.items()}, overlap=overlap)
    assert np.all(np.diff(joined.wavelength) >= 0)
    assert joined.wavelength[0] == 4.9 and joined.wavelength[-1] == 7.65
    truth = 0.02 * (joined.wavelength / 5.0) ** 1.5
    pulls = (joined.flux - truth) / joined.error
    if overlap == "cut":
        # Every value from exactly one band; the 1A/1B overlap is cut at its midpoint.
        assert joined.wavelength.size == len(np.unique(joined.wavelength))
        middle = 0.5 * (5.66 + 5.74)
        assert set(joined.band[(joined.wavelength > 5.66) & (joined.wavelength < middle)]) == {"1A"}
        assert set(joined.band[(joined.wavelength >= middle) & (joined.wavelength < 5.74)]) == {
            "1B"
        }
        assert_honest_pulls(pulls, label="cut")
    else:
        inside = (joined.wavelength >= 5.66) & (joined.wavelength <= 5.74)
        assert np.all(joined.n_input[inside] > 4)
        # Interpolation correlates neighbours but leaves each value's error right.
        assert_honest_pulls(pulls[~inside], label="average, outside overlaps")
        assert 0.8 < np.std(pulls[inside]) < 1.2
    assert_allclose(list(joined.scale_ratios.values()), 1.0, atol=0.005)
    assert joined.scales == {"1A": 1.0, "1B": 1.0, "1C": 1.0}


def test_band_scale_offsets_are_measured_and_applied_only_when_asked():
    bands = {"1A": _band(4.9, 5.74, seed=1)[1], "1B": _band(5.66, 6.63, 1.03, seed=2)[1]}
    reported = stitch_bands(bands)
    assert_allclose(reported.scale_ratios["1A/1B"], 1 / 1.03, rtol=3e-3)
    assert reported.scales["1B"] == 1.0
    matched = stitch_bands(bands, match_scale=True)
    assert_allclose(matched.scales["1B"], 1 / 1.03, rtol=3e-3)
    truth = 0.02 * (matched.wavelength / 5.0) ** 1.5
    assert (
        abs(np.median(matched.flux[matched.band == "1B"] / truth[matched.band == "1B"]) - 1) < 2e-3
    )
    with pytest.raises(ValueError, match="overlap must be"):
        stitch_bands(bands, overlap="splice")


# ---------------------------------------------------------------- the step, on simulated dithers

#: A 4-point dither (alpha, beta; arcsec) in SHORT, two points in MEDIUM.
SHORT_DITHERS = [(0.45, 0.32), (-0.45, -0.32), (0.52, -0.41), (-0.38, 0.47)]
MEDIUM_DITHERS = [(0.3, 0.2), (-0.3, -0.25)]
#: The source's sky position: every exposure is pointed so that its dither position lands there.
TARGET = (10.001, 19.999)


@pytest.fixture(scope="module")
def dither_x1d(tmp_path_factory):
    """x1d files of a noisy source (packaged PSF simulated and extracted: the PSF is matched,
    this module tests the combination) in 1A/2A at four dithers and 1B/2B at two."""
    from conftest import calibrated_mrs

    from mirispec_steps import MrsCentroidStep, MrsExtractStep

    folder = tmp_path_factory.mktemp("dithers")
    files, truth = [], None
    cases = [("SHORT", d) for d in SHORT_DITHERS] + [("MEDIUM", d) for d in MEDIUM_DITHERS]
    for index, (band, (alpha, beta)) in enumerate(cases):
        simulated, calibrated = calibrated_mrs(
            folder / f"d{index}", band=band, alpha=alpha, beta=beta, seed=80 + index,
            lines=(), bad_pixel_fraction=0.0, target=TARGET,
        )  # fmt: skip
        truth = simulated.truth
        calibrated.meta.filename = f"dither{index}_{band.lower()}_mrscal.fits"
        x1d = MrsExtractStep.call(MrsCentroidStep.call(calibrated), psf="reference")
        path = folder / f"dither{index}_{band.lower()}_x1d.fits"
        x1d.save(path)
        files.append(str(path))
    return files, truth


def _pulls(spec, truth, band):
    table = spec.spec_table
    expected = truth.flux(np.asarray(table["WAVELENGTH"]), band)
    return (np.asarray(table["FLUX"]) - expected) / np.asarray(table["FLUX_ERROR"])


def test_mrs_combine_step_combines_and_stitches(dither_x1d, tmp_path):
    from specutils import SpectrumList
    from stdatamodels.jwst import datamodels

    files, truth = dither_x1d
    # As users run it: strun with the dithers' files on the command line.
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "strun"), "mrs_combine", *files,
         f"--output_dir={tmp_path}", "--save_plots=True"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["dither0_short_c1d.fits", "dither0_short_c1d.png"], written
    with datamodels.open(tmp_path / "dither0_short_c1d.fits") as product:
        names = [spec.name for spec in product.spec]
        assert names == ["ALL", "1A", "1B", "2A", "2B"], names
        assert product.meta.cal_step.mrs_combine == "COMPLETE"
        record = product.mirispec_combination.instance
        for band, spec in zip(names[1:], product.spec[1:], strict=True):
            n_dithers = 4 if band.endswith("A") else 2
            assert len(record["bands"][band]["dithers"]) == n_dithers
            assert not any(d["excluded"] for d in record["bands"][band]["dithers"])
            assert np.nanmedian(spec.spec_table["NPIXELS"]) == n_dithers
            pulls = _pulls(spec, truth, band)
            assert_honest_pulls(pulls, label=band)
        stitched = product.spec[0].spec_table
        assert np.all(np.diff(stitched["WAVELENGTH"]) > 0)
        assert stitched["WAVELENGTH"][0] < 4.95 and stitched["WAVELENGTH"][-1] > 10.0
        assert set(record["scale_ratios"]) == {"1A/1B", "1B/2A", "2A/2B"}
        assert abs(record["scale_ratios"]["1A/1B"] - 1) < 0.01
    spectra = SpectrumList.read(tmp_path / "dither0_short_c1d.fits", format="JWST x1d multi")
    assert len(spectra) == 5 and spectra[0].flux.unit == "Jy"


def test_mrs_combine_reports_and_leaves_out_a_bad_dither(dither_x1d, tmp_path, caplog):
    """One dither's fluxes 4% low (a bad exposure), another extracted 0.2 arcsec away from
    the others (a pointing error: reported; the centroid followed the source)."""
    from stdatamodels.jwst import datamodels

    from mirispec_steps import MrsCombineStep

    files, truth = dither_x1d
    models = [datamodels.open(path) for path in files]
    for spec in models[1].spec:
        spec.spec_table["FLUX"] *= 0.96
        spec.spec_table["RF_FLUX"] *= 0.96
    for spec in models[2].spec:
        spec.slit_dec += 0.2 / 3600
    before = {path: open(path, "rb").read() for path in files[:3]}
    output = MrsCombineStep.call(models)
    record = output.mirispec_combination.instance["bands"]
    for band in ("1A", "2A"):
        dithers = record[band]["dithers"]
        assert [d["excluded"] for d in dithers] == [False, True, False, False], dithers
        assert "times the other dithers'" in dithers[1]["reason"]
        assert [d["pointing_flag"] for d in dithers] == [False, False, True, False]
        spec = next(s for s in output.spec if s.name == band)
        assert_honest_pulls(_pulls(spec, truth, band), label=band)
    assert "left out" in caplog.text and "arcsec from the other dithers" in caplog.text
    assert all(open(path, "rb").read() == before[path] for path in before)


def test_mrs_combine_refuses_mixed_inputs(dither_x1d, tmp_path):
    from stdatamodels.jwst import datamodels

    from mirispec_steps import MrsCombineStep
    from mirispec_steps.errors import InputDataError

    files, _ = dither_x1d
    other = datamodels.open(files[1])
    other.meta.target.catalog_name = "ANOTHER STAR"
    first = datamodels.open(files[0])
    first.meta.target.catalog_name = "THE STAR"
    output = tmp_path / "out"
    with pytest.raises(InputDataError, match="of target 'ANOTHER STAR'"):
        MrsCombineStep.call([first, other], output_dir=str(output), save_results=True)
    lrs = datamodels.open(files[2])
    lrs.meta.exposure.type = "MIR_LRS-FIXEDSLIT"
    lrs.meta.filename = "lrs_x1d.fits"
    with pytest.raises(InputDataError, match="lrs_x1d.fits is not an MRS x1d"):
        MrsCombineStep.call([datamodels.open(files[0]), lrs], output_dir=str(output),
                            save_results=True)  # fmt: skip
    assert not output.exists() or not any(output.iterdir())
