"""Our x1d files read by specutils (as jdaviz does), with units and uncertainties intact."""

import astropy.units as u
import numpy as np
import pytest
from stdatamodels.jwst import datamodels

specutils = pytest.importorskip("specutils")
Spectrum = getattr(specutils, "Spectrum", None) or specutils.Spectrum1D


def read(*args, **kwargs):
    return Spectrum.read(*args, **kwargs)


def check_against_table(spectrum, table):
    good = np.isfinite(table["FLUX"]) & np.isfinite(table["FLUX_ERROR"])
    assert spectrum.flux.unit == u.Jy
    assert spectrum.spectral_axis.unit == u.micron
    np.testing.assert_allclose(spectrum.spectral_axis.value, table["WAVELENGTH"], rtol=1e-7)
    np.testing.assert_allclose(spectrum.flux.value[good], table["FLUX"][good], rtol=1e-6)
    # FLUX_ERROR is a standard deviation.
    assert type(spectrum.uncertainty).__name__ == "StdDevUncertainty"
    np.testing.assert_allclose(
        spectrum.uncertainty.array[good], table["FLUX_ERROR"][good], rtol=1e-6
    )


def test_lrs_x1d_reads_as_jwst_x1d(tmp_path, cal_nod_a):
    from mirispec_steps import LrsOptimalExtractStep

    x1d = LrsOptimalExtractStep.call(cal_nod_a.model)
    path = tmp_path / "lrs_x1d.fits"
    x1d.save(path)
    spectrum = read(path, format="JWST x1d")
    with datamodels.open(path) as saved:
        check_against_table(spectrum, saved.spec[0].spec_table)


def test_mrs_x1d_reads_as_a_spectrum_list(tmp_path):
    from conftest import calibrated_mrs

    from mirispec_steps import MrsCentroidStep, MrsExtractStep

    _, calibrated = calibrated_mrs(tmp_path, seed=51)
    x1d = MrsExtractStep.call(MrsCentroidStep.call(calibrated))
    path = tmp_path / "mrs_x1d.fits"
    x1d.save(path)
    spectra = specutils.SpectrumList.read(str(path), format="JWST x1d multi")
    with datamodels.open(path) as saved:
        assert len(spectra) == len(saved.spec) == 2
        for spectrum, spec in zip(spectra, saved.spec, strict=True):
            check_against_table(spectrum, spec.spec_table)
