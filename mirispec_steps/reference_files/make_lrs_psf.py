"""Regenerate the packaged LRS PSF reference file from the package's PSF model.

Run from the repository root: ``python reference_files/make_lrs_psf.py``.
The model (:class:`mirispec_steps.simulate.psf.LrsPsf`, documented in
docs/lrs_optimal_extract.rst) is a pixel-integrated two-Gaussian profile:
a core whose FWHM is max(1.8, 0.30 x lambda[um]) pixels holding 92% of the
light and wings 3.5 times wider holding 8%. The file follows jwst's LRS
``psf`` reftype (SpecPsfModel: PSF and WAVE extensions, SUBPIX, CENTCOL), so
the official CRDS file can replace it with ``--override_psf``.
"""

from pathlib import Path

from mirispec_steps.simulate.psf import LrsPsf, write_lrs_psf_reference

if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "mirispec_miri_lrs_psf.fits"
    write_lrs_psf_reference(target, LrsPsf(), subpix=10, half_extent=30.0)
    print(f"wrote {target}")
