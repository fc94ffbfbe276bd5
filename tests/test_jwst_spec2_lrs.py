"""Current jwst LRS products: calwebb_spec2 run for real offline on a simulated LRS rate file.

jwst 2.0 and later convert MIRI LRS exposures to ``SlitModel`` before
calibrating them, so a ``cal`` file today is an unrectified SlitModel with a
WCS. Here jwst's own Spec2Pipeline makes that product (assign_wcs on the real
LRS geometry in tests/data/lrs, srctype, photom with the simulator's
response; steps that need CRDS files are skipped), and our steps and jwst's
Extract1dStep extract it.
"""

import numpy as np
import pytest
from conftest import OPERATIONAL_EXTRACT1D, truth_at
from jwst.pipeline import Spec2Pipeline
from stdatamodels.jwst import datamodels
from test_parity_jwst import assert_parity, run_both

from mirispec_steps import LrsBoxExtractStep, LrsExtractPipeline, LrsOptimalExtractStep
from mirispec_steps.simulate import offline_crds, simulate_lrs
from mirispec_steps.simulate.lrs import lrs_rate_and_photom

PRODUCT = "jw01530001001_03102_00001_mirimage"
#: Spec2 steps that run on LRS fixed slit here; the others need CRDS files (or are for other modes).
RUNNING = {"assign_wcs", "srctype", "photom"}


@pytest.fixture(scope="module")
def spec2_cal(real_reference_dir, tmp_path_factory):
    """(jwst's cal product, the simulation it came from)."""
    folder = tmp_path_factory.mktemp("spec2_lrs")
    simulated = simulate_lrs(
        "cal", seed=17, noise=False, background=0.0, reference_dir=real_reference_dir
    )
    rate, photom = lrs_rate_and_photom(simulated)
    rate.save(folder / f"{PRODUCT}_rate.fits")
    photom.save(folder / "sim_lrs_photom.fits")
    steps = {
        "assign_wcs": {
            "override_distortion": str(
                real_reference_dir / "jwst_miri_imager_distortion_flt1.asdf"
            ),
            "override_specwcs": str(real_reference_dir / "jwst_miri_specwcs_0005.fits"),
        },
        "photom": {"override_photom": str(folder / "sim_lrs_photom.fits"), "override_area": "N/A"},
    }
    for name, step_class in Spec2Pipeline.step_defs.items():
        reftypes = step_class.reference_file_types
        if name in RUNNING and isinstance(reftypes, list):
            for reftype in reftypes:
                steps.setdefault(name, {}).setdefault(f"override_{reftype}", "N/A")
        else:
            steps.setdefault(name, {})["skip"] = True
    # (a module fixture runs before the per-test offline CRDS set-up: its own here)
    with offline_crds(folder / "crds_cache"):
        Spec2Pipeline.call(
            str(folder / f"{PRODUCT}_rate.fits"), steps=steps, output_dir=str(folder),
            save_results=True,
        )  # fmt: skip
    return datamodels.open(folder / f"{PRODUCT}_cal.fits"), simulated


def median_ratio(x1d, truth):
    table = x1d.spec[0].spec_table
    select = (table["WAVELENGTH"] > 5) & (table["WAVELENGTH"] < 12)
    return float(np.median(np.asarray(table["FLUX"])[select] / truth_at(table, truth)[select]))


def test_jwst_writes_an_unrectified_slitmodel(spec2_cal):
    cal, simulated = spec2_cal
    assert isinstance(cal, datamodels.SlitModel)
    assert cal.meta.cal_step.photom == "COMPLETE" and cal.meta.cal_step.assign_wcs == "COMPLETE"
    assert cal.data.shape == (1024, 1032)
    # photom gave back the simulated surface brightness
    finite = np.isfinite(cal.data) & (simulated.truth.noiseless > 1.0)
    assert np.allclose(cal.data[finite], simulated.truth.noiseless[finite], rtol=2e-5)


def test_our_steps_extract_jwsts_cal_product(spec2_cal, apcorr_file):
    cal, simulated = spec2_cal
    box = LrsBoxExtractStep.call(
        cal, override_extract1d=str(OPERATIONAL_EXTRACT1D), override_apcorr=apcorr_file
    )
    assert median_ratio(box, simulated.truth) == pytest.approx(1.0, abs=0.003)
    optimal = LrsOptimalExtractStep.call(cal)
    assert median_ratio(optimal, simulated.truth) == pytest.approx(1.0, abs=0.001)
    both = LrsExtractPipeline.call(cal, steps={"lrs_box_extract": {"override_apcorr": apcorr_file}})
    assert median_ratio(both, simulated.truth) == pytest.approx(1.0, abs=0.001)


def test_box_parity_with_jwst_on_its_cal_product(spec2_cal, write_extract1d, apcorr_file):
    cal, _ = spec2_cal
    extract1d = write_extract1d(
        xstart=320, xstop=327, bkg_coeff=[[303.5], [309.5], [339.5], [345.5]], bkg_order=1,
        use_source_posn=False,
    )  # fmt: skip
    assert_parity(*run_both(cal, extract1d, apcorr=apcorr_file))


def test_product_formats_give_the_same_spectra(write_extract1d, apcorr_file):
    """The same exposure as a SlitModel (jwst >= 2.0) and an ImageModel/CubeModel (older)."""
    for kind, settings in (("cal", {}), ("calints", {"n_integrations": 3})):
        spectra = []
        for product in ("slit", "image"):
            model = simulate_lrs(kind, seed=5, product=product, **settings).model
            spectra.append(
                (
                    LrsOptimalExtractStep.call(model).spec[0].spec_table["FLUX"],
                    LrsBoxExtractStep.call(model, override_apcorr=apcorr_file)
                    .spec[0].spec_table["FLUX"],
                )
            )  # fmt: skip
        for slit_flux, image_flux in zip(*spectra, strict=True):
            assert np.array_equal(np.asarray(slit_flux), np.asarray(image_flux), equal_nan=True)
