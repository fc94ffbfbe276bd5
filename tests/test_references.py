"""Where reference files come from: override, then CRDS; packaged files only as documented.

jwst's reftypes (extract1d, apcorr, psf, photom, fringe): the override, else
CRDS, else (only when CRDS cannot be reached) the packaged fallback where one
exists, with a warning and a record in the product. The package's own
reftypes: the override, else the packaged default. Missing references stop a
step or pipeline before any work, in one error that names all of them.
CRDS is exercised for real, offline: a local cache with mappings and files.
"""

import logging
import re

import numpy as np
import pytest
from conftest import fake_crds
from stdatamodels.jwst import datamodels

from mirispec_steps import (
    LrsBoxExtractStep,
    LrsExtractPipeline,
    LrsOptimalExtractStep,
    MrsCalibrateStep,
    MrsCentroidStep,
)
from mirispec_steps.errors import CrdsUnavailableError
from mirispec_steps.references import packaged_reference, references_used
from mirispec_steps.simulate import LrsPsf, simulate_lrs
from mirispec_steps.simulate.psf import write_lrs_psf_reference

OPERATIONAL_PSF = packaged_reference("mirispec_miri_lrs_psf.fits")


@pytest.fixture(scope="module")
def cal():
    return simulate_lrs("cal", seed=4, noise=False, background=0.0).model


@pytest.fixture(scope="module")
def crds_files(tmp_path_factory, apcorr_file):
    """Files CRDS will hand out: a PSF 10% wider than the packaged one, so the two differ."""
    folder = tmp_path_factory.mktemp("crds_files")
    psf = write_lrs_psf_reference(folder / "wide_psf.fits", LrsPsf(width_scale=1.1))
    return {"apcorr": apcorr_file, "psf": str(psf)}


def test_crds_reachable_is_used_and_recorded(cal, crds_files, tmp_path, write_extract1d):
    extract1d = write_extract1d(xstart=27, xstop=34)
    with fake_crds(tmp_path / "crds", {**crds_files, "extract1d": extract1d}) as cache:
        box = LrsBoxExtractStep.call(cal)
        optimal = LrsOptimalExtractStep.call(cal, profile="psf")
        measured = LrsOptimalExtractStep.call(cal)
    serial = next(cache.glob("mappings/jwst/jwst_*.pmap")).stem.split("_")[1]
    # recorded as jwst records CRDS files
    assert references_used(box)["apcorr"] == f"crds://jwst_miri_apcorr_{serial}.fits"
    assert box.meta.ref_file.extract1d.name == f"crds://jwst_miri_extract1d_{serial}.json"
    assert references_used(optimal)["psf"] == f"crds://jwst_miri_psf_{serial}.fits"
    assert box.meta.ref_file.crds.context_used == f"jwst_{serial}.pmap"
    # the CRDS PSF (10% wider) was the one used: a different flux than the packaged PSF gives
    packaged = LrsOptimalExtractStep.call(cal, profile="psf", override_psf=OPERATIONAL_PSF)
    flux = np.asarray(optimal.spec[0].spec_table["FLUX"])
    assert np.nanmedian(np.abs(flux / packaged.spec[0].spec_table["FLUX"] - 1)) > 0.01
    # with the profile measured from the data (the default for a bright source) the
    # reference's shape hardly matters
    assert references_used(measured)["psf"] == f"crds://jwst_miri_psf_{serial}.fits"
    measured_packaged = LrsOptimalExtractStep.call(cal, override_psf=OPERATIONAL_PSF)
    flux = np.asarray(measured.spec[0].spec_table["FLUX"])
    assert np.nanmedian(np.abs(flux / measured_packaged.spec[0].spec_table["FLUX"] - 1)) < 0.003


def test_override_beats_crds(cal, crds_files, tmp_path, write_extract1d):
    extract1d = write_extract1d(xstart=27, xstop=34)
    with fake_crds(tmp_path / "crds", {**crds_files, "extract1d": extract1d}):
        optimal = LrsOptimalExtractStep.call(cal, override_psf=OPERATIONAL_PSF)
    assert references_used(optimal)["psf"] == OPERATIONAL_PSF


def test_crds_without_a_file_for_the_data_is_not_a_fallback(cal, crds_files, tmp_path):
    """A reachable CRDS that has no extract1d rule: an error, not the packaged copy."""
    with (
        fake_crds(tmp_path / "crds", crds_files),
        pytest.raises(CrdsUnavailableError, match="CRDS has no 'extract1d'.*--override_extract1d"),
    ):
        LrsBoxExtractStep.call(cal)


def test_crds_unreachable_uses_fallbacks_once_with_a_warning(cal, apcorr_file, caplog):
    caplog.set_level(logging.INFO)
    box = LrsBoxExtractStep.call(cal, override_apcorr=apcorr_file)
    warnings = [r for r in caplog.records if "packaged fallback" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "mirispec_miri_lrs_extract1d.json" in warnings[0].getMessage()
    recorded = box.meta.ref_file.extract1d.name
    assert (
        recorded == "mirispec_steps://mirispec_miri_lrs_extract1d.json (fallback, CRDS unreachable)"
    )
    optimal = LrsOptimalExtractStep.call(cal)
    assert "fallback" in references_used(optimal)["psf"]


def test_own_reftypes_never_ask_crds(mrs_noisy, caplog):
    """mrsresol and mrspsf: the packaged default (CRDS unreachable), and no fallback warning."""
    simulated, files = mrs_noisy
    calibrated = MrsCalibrateStep.call(
        simulated.rate, override_photom=files["photom"], override_fringe=files["fringe"]
    )
    located = MrsCentroidStep.call(calibrated)
    assert "fallback" not in caplog.text
    assert references_used(located)["mrspsf"].startswith(
        "mirispec_steps://mirispec_miri_mrs_psf.asdf (packaged default)"
    )


def test_every_missing_reference_in_one_error(mrs_noisy, tmp_path):
    simulated, _ = mrs_noisy
    with pytest.raises(CrdsUnavailableError) as error:
        MrsCalibrateStep.call(simulated.rate, output_dir=str(tmp_path), save_results=True)
    message = str(error.value)
    assert re.search("fringe: CRDS cannot be reached.*; pass --override_fringe", message)
    assert re.search("photom: CRDS cannot be reached.*; pass --override_photom", message)
    assert list(tmp_path.iterdir()) == []


def test_failed_pipeline_writes_nothing(cal, tmp_path):
    """lrs_extract without an apcorr: stopped before the optimal step wrote its plot."""
    model = cal.copy()
    model.meta.filename = "jw_lrs_cal.fits"
    with pytest.raises(CrdsUnavailableError, match="--steps.lrs_box_extract.override_apcorr"):
        LrsExtractPipeline.call(model, output_dir=str(tmp_path), save_results=True, save_plots=True)
    assert list(tmp_path.iterdir()) == []


def test_recorded_references_survive_save(cal, apcorr_file, tmp_path):
    box = LrsBoxExtractStep.call(cal, override_apcorr=apcorr_file)
    box.save(tmp_path / "x1d.fits")
    with datamodels.open(tmp_path / "x1d.fits") as reopened:
        assert references_used(reopened)["apcorr"] == apcorr_file
