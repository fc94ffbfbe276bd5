"""MrsCalibrateStep: exact recovery, variance propagation, jwst parity, usage and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_honest_pulls
from numpy.testing import assert_allclose
from stdatamodels.jwst import datamodels

from mirispec_steps import MrsCalibrateStep
from mirispec_steps.errors import InputDataError, MirispecError, ReferenceFileError
from mirispec_steps.flags import DO_NOT_USE
from mirispec_steps.mrs.calibrate import (
    calibrate_mrs,
    load_backgrounds,
)
from mirispec_steps.mrs.core.calibrate import VarianceImage, combine_backgrounds
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.mrs.references import load_calibration_references


def calibrate(model, files, **parameters):
    parameters.setdefault("override_photom", files["photom"])
    parameters.setdefault("override_fringe", files["fringe"])
    return MrsCalibrateStep.call(model, **parameters)


def relative_to_signal(values, truth):
    """|values - truth.surface_brightness| over the local (scene + background) level."""
    scale = np.abs(truth.surface_brightness) + truth.background
    return np.abs(values - truth.surface_brightness) / scale


def test_noise_free_recovery_is_exact(mrs_noiseless):
    simulated, files = mrs_noiseless
    result = calibrate(files["rate"], files, background=files["background"])
    truth = simulated.truth
    on_slices = np.isfinite(truth.surface_brightness)
    assert result.meta.bunit_data == "MJy/sr"
    assert result.meta.cal_step.mrs_calibrate == "COMPLETE"
    assert result.meta.cal_step.photom == "COMPLETE"
    assert result.meta.cal_step.bkg_subtract == "COMPLETE"
    assert result.meta.ref_file.photom.name.endswith("photom.fits")
    assert np.all(np.isfinite(result.data[on_slices]))
    assert not np.any(np.isfinite(result.data[~on_slices]))
    assert np.all(result.dq[~on_slices] & 1)
    # float32 slopes: the background-subtracted values are exact to float precision.
    assert np.max(relative_to_signal(result.data, truth)[on_slices]) < 1e-6
    # the time-dependent loss was really there and was removed
    assert np.nanmin(truth.time_loss) < 0.9
    assert_allclose(result.meta.photometry.pixelarea_arcsecsq, np.nanmean(truth.pixel_area))


def test_variances_match_monte_carlo(mrs_noiseless, tmp_path):
    simulated, files = mrs_noiseless
    references = load_calibration_references(simulated.rate, files["fringe"], files["photom"])
    values, variances = [], []
    for seed in range(1, 25):
        draw = simulated.redraw(seed, noise=True)
        background = load_backgrounds(draw.background, draw.rate, 3.0)
        result = calibrate_mrs(draw.rate, references, background)
        values.append(result.data.astype(float))
        variances.append(result.err.astype(float) ** 2)
    values, variances = np.array(values), np.array(variances)
    empirical = values.var(axis=0, ddof=1)
    predicted = variances.mean(axis=0)
    usable = np.isfinite(empirical) & np.isfinite(predicted) & (predicted > 0)
    ratio = empirical[usable].sum() / predicted[usable].sum()
    assert 0.95 < ratio < 1.05
    bright = usable & (
        simulated.truth.surface_brightness
        > np.nanpercentile(simulated.truth.surface_brightness, 99.5)
    )
    assert 0.95 < empirical[bright].sum() / predicted[bright].sum() < 1.05
    # and the mean is unbiased: pulls of the 24-draw mean
    pulls = (values.mean(axis=0) - simulated.truth.surface_brightness)[usable] / np.sqrt(
        predicted[usable] / len(values)
    )
    assert_honest_pulls(pulls)


def test_parity_with_jwst_fringe_and_photom(mrs_noisy):
    from jwst.fringe import FringeStep
    from jwst.photom import PhotomStep

    simulated, files = mrs_noisy
    ours = calibrate(simulated.rate, files)
    fringed = FringeStep.call(simulated.rate, override_fringe=files["fringe"])
    theirs = PhotomStep.call(fringed, override_photom=files["photom"], override_area="N/A")
    assert theirs.meta.bunit_data == "MJy/sr"
    for name in ("data", "err", "var_poisson", "var_rnoise"):
        mine, jwst_values = getattr(ours, name), getattr(theirs, name)
        assert np.array_equal(np.isfinite(mine), np.isfinite(jwst_values)), name
        finite = np.isfinite(mine)
        assert_allclose(mine[finite], jwst_values[finite], rtol=1e-6, err_msg=name)
    assert np.array_equal(ours.dq, theirs.dq)
    assert ours.meta.photometry.pixelarea_steradians == theirs.meta.photometry.pixelarea_steradians
    # and the time correction was part of it
    assert np.nanmin(simulated.truth.time_loss) < 0.9


def test_input_not_modified(mrs_noisy):
    simulated, files = mrs_noisy
    before = simulated.rate.data.copy(), simulated.rate.dq.copy()
    calibrate(simulated.rate, files, background=simulated.background)
    assert np.array_equal(simulated.rate.data, before[0], equal_nan=True)
    assert np.array_equal(simulated.rate.dq, before[1])
    assert simulated.rate.meta.bunit_data == "DN/s"


def test_strun_with_background_and_overrides(mrs_noisy, tmp_path):
    simulated, files = mrs_noisy
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "strun"),
            "mrs_calibrate",
            files["rate"],
            f"--background={files['background']}",
            f"--override_photom={files['photom']}",
            f"--override_fringe={files['fringe']}",
            f"--output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = tmp_path / (Path(files["rate"]).name.replace("_rate", "_mrscal"))
    with datamodels.open(output) as calibrated:
        assert calibrated.meta.cal_step.mrs_calibrate == "COMPLETE"
        assert calibrated.meta.bunit_data == "MJy/sr"
        assert calibrated.meta.ref_file.fringe.name.endswith("fringe.fits")
        truth = simulated.truth
        peak = np.nanargmax(np.where(calibrated.dq & 1, np.nan, truth.surface_brightness))
        peak = np.unravel_index(peak, truth.surface_brightness.shape)
        pull = (calibrated.data[peak] - truth.surface_brightness[peak]) / calibrated.err[peak]
        assert abs(pull) < 5


def test_several_backgrounds_list_and_association(mrs_noiseless, tmp_path):
    simulated, files = mrs_noiseless
    backgrounds = []
    for seed in range(3):
        draw = simulated.redraw(10 + seed, noise=True)
        path = tmp_path / f"bkg{seed}_rate.fits"
        draw.background.save(path)
        backgrounds.append(draw.background)
    # a glitch in one exposure only: rejected by the comparison with the other two
    glitch = (500, int(np.nanargmax(np.nan_to_num(simulated.truth.rate[500]))))
    backgrounds[1].data[glitch] += 1e4
    backgrounds[1].save(tmp_path / "bkg1_rate.fits")
    combined = load_backgrounds(backgrounds, simulated.rate, 3.0)
    unclipped = load_backgrounds(backgrounds, simulated.rate, 0)
    single = [load_backgrounds(b, simulated.rate, 0) for b in backgrounds]
    expected = sum(image.var_poisson for image in single) / 9
    assert_allclose(unclipped.var_poisson, expected, rtol=1e-6)
    assert_allclose(unclipped.data, sum(image.data for image in single) / 3, rtol=1e-6)
    # the glitch is rejected: mean and variance of the other two
    assert_allclose(combined.data[glitch], (single[0].data[glitch] + single[2].data[glitch]) / 2)
    assert_allclose(
        combined.var_rnoise[glitch], (single[0].var_rnoise + single[2].var_rnoise)[glitch] / 4
    )
    # noise alone is rejected as often as for ideal Gaussian noise with exact variances
    changed = np.isfinite(unclipped.data) & (combined.data != unclipped.data)
    rate = np.count_nonzero(changed) / np.count_nonzero(np.isfinite(unclipped.data))
    rng = np.random.default_rng(5)
    size = 300_000
    ideal = [
        VarianceImage(
            rng.standard_normal(size),
            np.ones(size),
            np.zeros(size),
            np.zeros(size),
            np.ones(size, bool),
        )
        for _ in range(3)
    ]
    ideal_rate = np.mean(combine_backgrounds(ideal, 3.0).data != sum(i.data for i in ideal) / 3)
    assert 0.7 * ideal_rate < rate < 1.3 * ideal_rate
    association = {
        "asn_type": "spec2",
        "products": [
            {
                "name": "test",
                "members": [
                    {"expname": files["rate"], "exptype": "science"},
                    *({"expname": f"bkg{k}_rate.fits", "exptype": "background"} for k in range(3)),
                ],
            }
        ],
    }
    asn_path = tmp_path / "background_asn.json"
    asn_path.write_text(json.dumps(association))
    from_asn = calibrate(files["rate"], files, background=str(asn_path))
    from_list = calibrate(
        files["rate"], files, background=[str(tmp_path / f"bkg{k}_rate.fits") for k in range(3)]
    )
    assert np.array_equal(from_asn.data, from_list.data, equal_nan=True)
    assert np.array_equal(from_asn.var_poisson, from_list.var_poisson, equal_nan=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"band": "MEDIUM"}, "band"),
        ({"detector": "MIRIFULONG"}, "MIRIFULONG"),
    ],
)
def test_background_of_another_setting(mrs_noisy, change, message):
    simulated, files = mrs_noisy
    background = simulated.background.copy()
    for key, value in change.items():
        setattr(background.meta.instrument, key, value)
    with pytest.raises(InputDataError, match=message):
        calibrate(simulated.rate, files, background=background)


def test_calibrated_background_refused(mrs_noisy):
    simulated, files = mrs_noisy
    background = simulated.background.copy()
    background.meta.bunit_data = "MJy/sr"
    with pytest.raises(InputDataError, match="already calibrated"):
        calibrate(simulated.rate, files, background=background)


def test_double_calibration_refused(mrs_noisy):
    simulated, files = mrs_noisy
    once = calibrate(simulated.rate, files)
    with pytest.raises(InputDataError, match="already calibrated"):
        calibrate(once, files)


@pytest.mark.parametrize("exp_type", ["MIR_LRS-FIXEDSLIT", "MIR_IMAGE"])
def test_other_miri_modes(mrs_noisy, exp_type):
    """Standalone: refused, naming the data; inside the MRS pipeline's chain: SKIPPED."""
    from mirispec_steps import MrsPointSourcePipeline

    simulated, files = mrs_noisy
    model = simulated.rate.copy()
    model.meta.exposure.type = exp_type
    with pytest.raises(InputDataError, match=f"{exp_type}, not MRS"):
        calibrate(model, files)
    result = MrsPointSourcePipeline().mrs_calibrate.run(model)
    assert result.meta.cal_step.mrs_calibrate == "SKIPPED"
    assert result.meta.bunit_data == "DN/s"


def test_reference_of_wrong_shape(mrs_noisy, tmp_path):
    simulated, files = mrs_noisy
    fringe = datamodels.FringeModel(files["fringe"])
    fringe.data = fringe.data[:512]
    fringe.dq = fringe.dq[:512]
    fringe.err = fringe.err[:512]
    bad = tmp_path / "small_fringe.fits"
    fringe.save(bad)
    rate_copy = tmp_path / "copy_rate.fits"
    simulated.rate.save(rate_copy)
    before = rate_copy.read_bytes()
    with pytest.raises(ReferenceFileError, match="small_fringe.fits.*shape"):
        calibrate(str(rate_copy), files, override_fringe=str(bad), save_results=True)
    assert rate_copy.read_bytes() == before
    assert not list(tmp_path.glob("*mrscal*"))


def test_reference_error_array_of_wrong_shape(mrs_noisy, tmp_path):
    """An ERR array that does not match SCI is a broken file, not 'no uncertainty'."""
    simulated, files = mrs_noisy
    photom = datamodels.MirMrsPhotomModel(files["photom"])
    photom.err = photom.err[:100]
    path = tmp_path / "short_err_photom.fits"
    photom.save(path)
    with pytest.raises(ReferenceFileError, match="short_err_photom.fits: ERR has shape"):
        calibrate(simulated.rate, files, override_photom=str(path))


def test_unusable_time_correction_flags_pixels(mrs_noiseless, tmp_path, caplog):
    """Time tables that give no positive throughput: those pixels DO_NOT_USE, never 'no loss'."""
    simulated, files = mrs_noiseless
    photom = datamodels.MirMrsPhotomModel(files["photom"])
    table = photom.timecoeff_powerlaw_ch1
    table["year1value"] = -1.0
    photom.timecoeff_powerlaw_ch1 = table
    path = tmp_path / "negative_time_photom.fits"
    photom.save(path)
    result = calibrate(simulated.rate, files, override_photom=str(path))
    good = calibrate(simulated.rate, files)
    channel1, channel2 = mrs_geometry(simulated.rate)
    assert np.all(result.dq[channel1.y, channel1.x] & DO_NOT_USE)
    assert np.all(np.isnan(result.data[channel1.y, channel1.x]))
    assert_allclose(result.data[channel2.y, channel2.x], good.data[channel2.y, channel2.x])
    assert "no positive throughput" in caplog.text


def test_reference_for_another_band(mrs_noisy, tmp_path):
    simulated, files = mrs_noisy
    photom = datamodels.MirMrsPhotomModel(files["photom"])
    photom.meta.instrument.band = "LONG"
    path = tmp_path / "long_photom.fits"
    photom.save(path)
    with pytest.raises(ReferenceFileError, match="band LONG"):
        calibrate(simulated.rate, files, override_photom=str(path))


def test_nan_and_zero_references_flag_pixels(mrs_noisy, tmp_path):
    simulated, files = mrs_noisy
    truth = simulated.truth
    rows, columns = np.nonzero(np.isfinite(truth.surface_brightness) & ~truth.bad_pixels)
    photom = datamodels.MirMrsPhotomModel(files["photom"])
    fringe = datamodels.FringeModel(files["fringe"])
    photom.data[rows[0], columns[0]] = 0.0
    photom.data[rows[1], columns[1]] = np.nan
    fringe.data[rows[2], columns[2]] = 0.0
    fringe.data[rows[3], columns[3]] = np.nan
    photom.save(tmp_path / "holes_photom.fits")
    fringe.save(tmp_path / "holes_fringe.fits")
    with np.errstate(all="raise"):
        result = calibrate(
            simulated.rate,
            files,
            override_photom=str(tmp_path / "holes_photom.fits"),
            override_fringe=str(tmp_path / "holes_fringe.fits"),
        )
    for k in range(4):
        pixel = rows[k], columns[k]
        assert result.dq[pixel] & 1
        assert np.isnan(result.data[pixel]) and np.isnan(result.err[pixel])
    assert not np.any(np.isinf(result.data))
    assert np.isfinite(result.data[rows[4], columns[4]])


def test_reference_uncertainty_goes_to_var_flat(mrs_noisy):
    simulated, files = mrs_noisy
    plain = calibrate(simulated.rate, files)
    with_reference = calibrate(simulated.rate, files, reference_uncertainty=True)
    finite = np.isfinite(plain.data)
    # the simulated photom has a 1% uncertainty and the fringe none
    assert_allclose(with_reference.var_flat[finite], (0.01 * plain.data[finite]) ** 2, rtol=1e-4)
    assert_allclose(with_reference.data[finite], plain.data[finite])
    assert np.all(plain.var_flat[finite] == 0)


def test_no_wcs_time_correction_needs_maps(mrs_noiseless, tmp_path):
    from mirispec_steps.mrs.maps import write_mrs_maps

    simulated, files = mrs_noiseless
    maps = write_mrs_maps(simulated.rate, tmp_path / "mrsmaps.asdf")
    bare = simulated.rate.copy()
    bare.meta.wcs = None
    with pytest.raises(InputDataError, match="override_mrsmaps"):
        calibrate(bare, files)
    with_maps = calibrate(bare, files, override_mrsmaps=str(maps))
    with_wcs = calibrate(simulated.rate, files)
    assert np.array_equal(with_maps.data, with_wcs.data, equal_nan=True)
    without_correction = calibrate(bare, files, apply_time_correction=False)
    finite = np.isfinite(with_wcs.data) & (simulated.truth.time_loss < 0.99)
    assert np.all(without_correction.data[finite] < with_wcs.data[finite])


def test_errors_are_one_family(mrs_noisy):
    simulated, files = mrs_noisy
    with pytest.raises(MirispecError):
        calibrate(simulated.rate, files, override_photom="/nonexistent/photom.fits")
