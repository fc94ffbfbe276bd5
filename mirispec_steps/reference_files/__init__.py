"""Packaged reference files: fallbacks for jwst reftypes and defaults of the package's own.

``make_lrs_psf.py`` and ``make_mrs_psf.py`` regenerate the PSF files from the
package's models (see ``docs/reference_files.rst``).
"""
