"""MrsPsfStep: an ``mrspsf`` PSF cube measured on calibrated MRS exposures of a bright star."""

from __future__ import annotations

import logging
from pathlib import Path

from stdatamodels.jwst.datamodels import ReferenceFileModel

from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.exposure import stored_solution
from mirispec_steps.mrs.psf_builder import (
    MrsPsfBuildSettings,
    build_mrs_psf,
    mrspsf_bands,
    star_flux_from_table,
)
from mirispec_steps.mrs.references import load_mrs_psf, load_mrs_resolution
from mirispec_steps.mrs.step import CalibratedMrsStep

__all__ = ["MrsPsfStep"]

log = logging.getLogger(__name__)


class MrsPsfStep(CalibratedMrsStep):
    """
    Measure the MRS PSF of every band on a bright point source and write an ``mrspsf`` cube.

    The input is one or more calibrated exposures of one bright, isolated,
    unsaturated point source (a standard star; a 4-point dither samples the
    PSF at four pixel phases), each with its centroid solution
    (``mrs_centroid``). Per band, one correction to the ``mrspsf`` reference
    is fitted to every spectral bin of every exposure at once (each exposure
    with its own fluxes and source track) and the corrected PSF is sampled
    into a cube: 12 planes across the band, cells of 1/8 FWHM out to 8 FWHM.
    Later extractions use it with ``--override_mrspsf``. The light beyond
    the field of view is the reference's, unless ``star_spectrum`` gives the
    star's known spectrum: then the share of the light the cube holds is
    measured (fitted fluxes over the star's, smooth in wavelength) and
    written with it, as jwst measures its aperture correction on standard
    stars. An input that is too faint,
    saturated, extended or holds two sources is an error, and nothing is
    written.
    """

    class_alias = "mrs_psf"
    product_suffix = "mrspsf"

    spec = """
    min_snr = float(default=50.0, min=5)  # smallest median bin S/N of an input exposure
    star_spectrum = string(default=None)  # table (ECSV, FITS, x1d) of the star's WAVELENGTH (micron) and FLUX (Jy): measures the light the PSF cube holds
    save_plots = boolean(default=False)  # PNG: PSF image, profiles against the reference, difference
    output_ext = string(default=".asdf")  # the mrspsf reference is an ASDF file
    """  # noqa: E501

    reference_file_types = ["mrspsf", "mrsresol"]

    def process(self, *inputs):
        """
        Measure the PSF.

        Parameters
        ----------
        *inputs : str, IFUImageModel, list or ModelContainer
            Calibrated MRS exposure(s) of a bright point source with a WCS
            and a centroid solution: one or several files or models, a list,
            or an association.

        Returns
        -------
        ReferenceFileModel
            The ``mrspsf`` reference (``model: cube``, ``bands``).
        """
        members = self.input_members(*inputs)
        for model in members:
            skipped, maps = self.calibrated_mrs_input(model)
            if skipped is not None or maps is not None:
                raise InputDataError(
                    f"{model.meta.filename}: mrs_psf needs calibrated MRS exposures with a WCS"
                )
            if stored_solution(model) is None:
                raise InputDataError(
                    f"{model.meta.filename} has no centroid solution: run mrs_centroid first"
                )
        references = self.resolve_references(members[0])
        reference = load_mrs_psf(references["mrspsf"])
        resolution = load_mrs_resolution(references["mrsresol"])
        star_flux = None
        if self.star_spectrum:
            star_flux = star_flux_from_table(self.star_spectrum)
        results = build_mrs_psf(
            members,
            reference,
            resolution,
            MrsPsfBuildSettings(min_snr=float(self.min_snr)),
            star_flux,
        )
        product = ReferenceFileModel()
        product["model"] = "cube"
        product["bands"] = mrspsf_bands(results)
        product.meta.filename = members[0].meta.filename
        product.meta.reftype = "MRSPSF"
        product.meta.instrument.name = "MIRI"
        product.meta.description = (
            f"MRS PSF measured by mrs_psf on {len(members)} exposure(s) of "
            f"{members[0].meta.target.proposer_name or 'a point source'}, correcting "
            f"{reference.source}"
            + (f"; light share measured on {Path(self.star_spectrum).name}" if star_flux else "")
        )
        product.meta.pedigree = "INFLIGHT"
        product.meta.author = "mirispec_steps mrs_psf"
        product.meta.telescope = "JWST"
        product.meta.useafter = "2022-01-01T00:00:00"
        if self.save_plots:
            from mirispec_steps.mrs.plots import plot_mrs_psf

            self.write_side_product(
                "the PSF plot",
                self.plot_path(product, members[0]),
                lambda path: plot_mrs_psf(results, path),
            )
        return product
