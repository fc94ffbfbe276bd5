"""
LrsPsfStep: a ``psf`` reference from a bright star, used on a faint target here and in jwst.

The star and the target are simulated with ``MoffatLrsPsf`` (a PSF the
package does not model); the step starts from the packaged two-Gaussian
reference. The oracle is the Moffat PSF itself written as a reference.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jwst.extract_1d import Extract1dStep
from stdatamodels.jwst import datamodels

from mirispec_steps import LrsOptimalExtractStep, LrsPsfStep
from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.core.psf_profile import evaluate_profile
from mirispec_steps.lrs.references import load_lrs_psf
from mirispec_steps.references import packaged_reference
from mirispec_steps.simulate import LrsPsf, MoffatLrsPsf, default_spectrum, simulate_lrs
from mirispec_steps.simulate.psf import write_lrs_psf_reference

FAMILY = MoffatLrsPsf()


def star(nod="A", seed=11, **options):
    """A bright star (5x the default spectrum), noisy, at nod ``nod``."""
    options.setdefault("psf", FAMILY)
    sim = simulate_lrs("cal", seed=seed, nod=nod, spectrum=lambda w: 5 * default_spectrum(w),
                       **options)  # fmt: skip
    sim.model.meta.filename = f"star_{nod.lower()}_cal.fits"
    return sim


def deviation(x1d, truth):
    table = x1d.spec[0].spec_table
    wavelength, flux = np.asarray(table["WAVELENGTH"]), np.asarray(table["FLUX"])
    order = np.argsort(truth.wavelength)
    expected = np.interp(wavelength, truth.wavelength[order], np.asarray(truth.flux)[order])
    select = (wavelength > 5) & (wavelength < 12)
    return flux[select] / expected[select] - 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lrs_psf")
    model = LrsPsfStep.call(star("A").model, output_dir=str(folder), save_results=True,
                            save_plots=True)  # fmt: skip
    return folder, model


@pytest.fixture(scope="module")
def target():
    """A faint target at the other nod position (where the star never was), noise-free."""
    return simulate_lrs("cal", noise=False, seed=13, nod="B", psf=FAMILY,
                        spectrum=lambda w: 0.01 * default_spectrum(w))  # fmt: skip


def test_the_file_is_written_and_named_after_the_star(built):
    folder, model = built
    assert (folder / "star_a_psf.fits").is_file()
    assert (folder / "star_a_psf.png").is_file()
    with datamodels.SpecPsfModel(folder / "star_a_psf.fits") as written:
        assert written.meta.reftype == "PSF"
        assert written.meta.exposure.type == "MIR_LRS-FIXEDSLIT"
        assert "lrs_psf" in written.meta.description
        aperture = written.apertures[0]
        assert aperture.name == "ANY" and aperture.subpix == 10
        np.testing.assert_allclose(aperture.data, model.apertures[0].data)


def test_the_measured_psf_is_the_stars(built):
    folder, _ = built
    table = load_lrs_psf(folder / "star_a_psf.fits")
    offsets = np.arange(-12.0, 13.0)
    for wavelength in (8.0, 10.0, 12.0):
        measured = evaluate_profile(table, offsets[None, :], np.array([wavelength]))[0]
        true = FAMILY.pixel_fractions(offsets, wavelength)
        packaged = LrsPsf().pixel_fractions(offsets, wavelength)
        assert np.max(np.abs(measured - true)) < 0.01 * true.max()
        assert np.max(np.abs(packaged - true)) > 0.05 * true.max()


def test_faint_target_at_another_position_within_half_a_percent(built, target):
    folder, _ = built
    with_built = deviation(
        LrsOptimalExtractStep.call(
            target.model, profile="psf", override_psf=str(folder / "star_a_psf.fits")
        ),  # fmt: skip
        target.truth,
    )
    low, median, high = np.percentile(with_built, [10, 50, 90])
    assert abs(median) < 0.005 and -0.005 < low and high < 0.005
    packaged = deviation(LrsOptimalExtractStep.call(target.model, profile="psf"), target.truth)
    assert abs(np.median(packaged)) > 0.05


def jwst_optimal(model, psf_file):
    return Extract1dStep.call(
        model, extraction_type="optimal", use_source_posn=True, optimize_psf_location=True,
        subtract_background=True, override_psf=str(psf_file),
        override_extract1d=packaged_reference("mirispec_miri_lrs_extract1d.json"),
        override_apcorr="N/A", override_pastasoss="N/A", override_specprofile="N/A",
        override_speckernel="N/A",
    )  # fmt: skip


def test_jwst_optimal_mode_reads_it_as_it_reads_the_true_psf(built, target, tmp_path):
    """jwst's own optimal extraction with the built file gives what it gives with the truth."""
    folder, _ = built
    oracle = write_lrs_psf_reference(tmp_path / "oracle_psf.fits", FAMILY)
    with_built = np.median(deviation(jwst_optimal(target.model, folder / "star_a_psf.fits"),
                                     target.truth))  # fmt: skip
    with_oracle = np.median(deviation(jwst_optimal(target.model, oracle), target.truth))
    with_packaged = np.median(deviation(
        jwst_optimal(target.model, packaged_reference("mirispec_miri_lrs_psf.fits")), target.truth
    ))  # fmt: skip
    print(f"jwst optimal, median FLUX/truth - 1: built {with_built:+.4f}, true PSF "
          f"{with_oracle:+.4f}, packaged {with_packaged:+.4f}")  # fmt: skip
    assert abs(with_built - with_oracle) < 0.005
    assert abs(with_packaged - with_oracle) > 0.05


def test_both_nods_combine(tmp_path):
    model = LrsPsfStep.call([star("A").model, star("B", seed=12).model])
    assert "star_a_cal.fits, star_b_cal.fits" in model.meta.description


# ---------------------------------------------------------------- refusals


def refused(model, tmp_path, match):
    """The step refuses ``model`` with ``match`` and writes nothing."""
    with pytest.raises(InputDataError, match=match):
        LrsPsfStep.call(model, output_dir=str(tmp_path), save_results=True, save_plots=True)
    assert list(tmp_path.iterdir()) == []


def test_faint_star_is_refused(tmp_path):
    faint = simulate_lrs("cal", seed=3, psf=FAMILY, spectrum=lambda w: 0.0005 * default_spectrum(w))
    refused(faint.model, tmp_path, "too faint to build a PSF")


def test_saturated_core_is_refused(tmp_path):
    sim = star("A")
    model = sim.model.copy()
    for row, column in zip(sim.truth.rows[100:140], np.round(sim.truth.trace[100:140]).astype(int),
                           strict=True):  # fmt: skip
        model.dq[row, column] |= datamodels.dqflags.pixel["SATURATED"]
    refused(model, tmp_path, "core is saturated on 40 rows")


def test_extended_source_is_refused(tmp_path):
    wide = star("A", psf=LrsPsf(width_scale=1.9))
    refused(wide.model, tmp_path, "looks extended")


def test_source_at_the_slit_end_is_refused(tmp_path):
    sim = star("A")
    model = sim.model.copy()
    # 9 px towards the slit's end (4 px from it), unknown to the WCS: found by the search.
    for name in ("data", "err", "var_poisson", "var_rnoise", "var_flat"):
        setattr(model, name, np.roll(getattr(model, name), 9, axis=-1))
    refused(model, tmp_path, "from the edge of the data")


def test_other_modes_are_refused(tmp_path, mrs_noiseless):
    with pytest.raises(InputDataError, match="not MIRI LRS"):
        LrsPsfStep.call(str(mrs_noiseless[1]["rate"]))


def test_strun(tmp_path):
    path = tmp_path / "jw01_star_cal.fits"
    star("A").model.save(path)
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "strun"), "lrs_psf", str(path), "--subpix=8",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    with datamodels.SpecPsfModel(tmp_path / "jw01_star_psf.fits") as written:
        assert written.apertures[0].subpix == 8
