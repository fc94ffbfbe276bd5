"""Regenerate the packaged MRS PSF reference file (reftype ``mrspsf``) from the package's model.

Run from the repository root: ``python reference_files/make_mrs_psf.py``.
The model (:class:`mirispec_steps.mrs.core.psf.MrsPsf`, documented in
docs/mrs_extract.rst) is analytic: an elliptical Gaussian core whose
along-slice FWHM is 0.033 lambda[um] + 0.106 arcsec (Law et al. 2023),
10% broader across slices, plus 10% of the light in a component three times
wider. Each band's entry is valid over the band's wavelengths padded by 2%
(the flight wavelength solutions reach slightly beyond the nominal bands).
A measured PSF cube can replace it with ``--override_mrspsf``.
"""

from dataclasses import asdict
from pathlib import Path

from mirispec_steps.mrs.core.psf import MrsPsf
from mirispec_steps.mrs.references import write_mrs_psf
from mirispec_steps.simulate.mrs_geometry import BAND_WAVELENGTHS

PADDING = 0.02

if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "mirispec_miri_mrs_psf.asdf"
    parameters = asdict(MrsPsf())
    bands = {
        band: {
            "wavelength_range": [round(low * (1 - PADDING), 4), round(high * (1 + PADDING), 4)],
            **parameters,
        }
        for band, (low, high) in BAND_WAVELENGTHS.items()
    }
    write_mrs_psf(
        target,
        bands,
        "analytic",
        description="Analytic MIRI MRS PSF of mirispec_steps (Gaussian core + wings)",
        author="mirispec_steps",
        pedigree="MODEL",
        useafter="2022-01-01T00:00:00",
    )
    print(f"wrote {target}")
