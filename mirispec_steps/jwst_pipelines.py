"""jwst's calwebb_spec2 and calwebb_spec3 with our MIRI extractions in place of jwst's.

Two subclasses, for the users who want every parameter of our steps inside a
jwst pipeline run (hooks given as class paths get default parameters only,
see ``docs/jwst_integration.rst``):

- :class:`MirispecSpec2Pipeline` (``mirispec_spec2``): calwebb_spec2 whose
  ``extract_1d`` is :class:`~mirispec_steps.LrsExtractPipeline` (MIRI LRS) and
  which, for MIRI MRS, runs ``mrs_centroid`` and ``mrs_extract`` on the
  calibrated exposure after photom instead of ``cube_build`` and
  ``extract_1d``.
- :class:`MirispecSpec3Pipeline` (``mirispec_spec3``): calwebb_spec3 for MIRI
  LRS whose ``extract_1d`` is :class:`~mirispec_steps.LrsExtractPipeline`, so
  that jwst's ``combine_1d`` combines our spectra; for MIRI MRS,
  ``mrs_centroid`` and ``mrs_extract`` on every calibrated exposure and
  ``mrs_combine`` into one spectrum, instead of cubes and their x1d.

Parameters pass as for any jwst substep:
``--steps.extract_1d.steps.lrs_optimal_extract.fit_trace_order=1`` or
``--steps.mrs_extract.method=aperture``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from astropy.io import fits
from jwst.pipeline import Spec2Pipeline, Spec3Pipeline
from jwst.stpipe import query_step_status
from stdatamodels.jwst import datamodels

from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.pipeline import LrsExtractPipeline
from mirispec_steps.mrs.centroid_step import MrsCentroidStep
from mirispec_steps.mrs.combine import check_one_target
from mirispec_steps.mrs.combine_step import MrsCombineStep
from mirispec_steps.mrs.extract_step import MrsExtractStep
from mirispec_steps.progress import progress
from mirispec_steps.stepbase import MirispecStep, ReferencesPerStep

__all__ = ["MirispecSpec2Pipeline", "MirispecSpec3Pipeline"]

log = logging.getLogger(__name__)


class _OurStepsInJwst(ReferencesPerStep):
    """What both subclasses change in their jwst parent (mixed in first)."""

    @staticmethod
    def get_stpipe_loggers():
        """
        jwst's loggers and ours, so that our log lines show under ``strun``.

        Returns
        -------
        tuple of str
            Logger names.
        """
        return MirispecStep.get_stpipe_loggers()


class MirispecSpec2Pipeline(_OurStepsInJwst, Spec2Pipeline):
    """
    calwebb_spec2 for MIRI LRS and MRS with mirispec_steps extractions.

    LRS: ``extract_1d`` is :class:`~mirispec_steps.LrsExtractPipeline` (box
    and optimal; give it cal data by skipping ``resample_spec``, else only
    the box extraction runs on the s2d). MRS: after photom, ``mrs_centroid``
    and ``mrs_extract`` run on the calibrated exposure and write the x1d;
    ``cube_build`` and ``extract_1d`` are skipped. The cal product carries
    the centroid solution. Other instruments and modes run as in
    calwebb_spec2, except that no 1-D extraction is done.
    """

    class_alias = "mirispec_spec2"

    step_defs = {
        **Spec2Pipeline.step_defs,
        "extract_1d": LrsExtractPipeline,
        "mrs_centroid": MrsCentroidStep,
        "mrs_extract": MrsExtractStep,
    }

    def process_exposure_product(self, exp_product, pool_name=" ", asn_file=" "):
        """
        Calibrate one exposure as calwebb_spec2 does, then extract MRS spectra from it.

        Parameters
        ----------
        exp_product : dict
            The association product (name and members).
        pool_name, asn_file : str
            Recorded in the output, as in calwebb_spec2.

        Returns
        -------
        DataModel
            The calibrated exposure (with the centroid solution for MRS).
        """
        is_mrs = self._science_exp_type(exp_product) == "MIR_MRS"
        if is_mrs and not self.cube_build.skip:
            log.info("MIRI MRS: mrs_centroid and mrs_extract replace cube_build and extract_1d")
            self.cube_build.skip = True
        calibrated = super().process_exposure_product(exp_product, pool_name, asn_file)
        if not is_mrs or calibrated is None:
            return calibrated
        if query_step_status(calibrated, "photom") != "COMPLETE":
            log.warning("photom did not run: no MRS spectra are extracted (they need MJy/sr)")
            return calibrated
        located = self.mrs_centroid.run(calibrated)
        self.mrs_extract.save_results = self.save_results
        # The exposure's spectra are calwebb_spec2's x1d product.
        self.mrs_extract.suffix = self.mrs_extract.suffix or "x1d"
        x1d = self.mrs_extract.run(located)
        x1d.close()
        return located

    def _science_exp_type(self, exp_product) -> str | None:
        science = [m["expname"] for m in exp_product["members"] if m["exptype"] == "science"]
        if not science:
            return None
        member = science[0]
        if isinstance(member, datamodels.JwstDataModel):
            return member.meta.exposure.type
        # calwebb_spec2 opens the exposure itself: read only the keyword here.
        return fits.getval(member, "EXP_TYPE", ext=0)


class MirispecSpec3Pipeline(_OurStepsInJwst, Spec3Pipeline):
    """
    calwebb_spec3 for MIRI LRS and MRS point sources with mirispec_steps extractions.

    LRS: each exposure of the association is extracted by our primary
    method (``--steps.extract_1d.primary=box|optimal``) and jwst's
    ``combine_1d`` combines the spectra. The optimal method needs cal data:
    skip ``resample_spec`` (the packaged parameter file does).

    MRS: the calibrated exposures (calwebb_spec2's ``cal``, background
    subtracted) of one target go through ``mrs_centroid`` and
    ``mrs_extract`` one by one (``<exposure>_x1d``), and ``mrs_combine``
    combines the dithers, removes residual fringes and the 1B leak and
    stitches the bands into ``<product>_c1d``, in place of jwst's cubes and
    their x1d. Background members are not used (subtract backgrounds in
    calwebb_spec2).
    """

    class_alias = "mirispec_spec3"

    step_defs = {
        **Spec3Pipeline.step_defs,
        "extract_1d": LrsExtractPipeline,
        "mrs_centroid": MrsCentroidStep,
        "mrs_extract": MrsExtractStep,
        "mrs_combine": MrsCombineStep,
    }

    def process(self, input_data):
        """
        calwebb_spec3, or for an MRS association our point-source route.

        Parameters
        ----------
        input_data : str, association or ModelContainer
            Level-3 association of calibrated exposures.

        Returns
        -------
        None
            As calwebb_spec3: the products are the files it saves
            (``save_results``).
        """
        if _first_science_exp_type(input_data) != "MIR_MRS":
            return super().process(input_data)
        log.info("MIRI MRS: mrs_centroid, mrs_extract and mrs_combine replace cubes and extract_1d")
        models = self.prepare_output(input_data, asn_exptypes=["science"])
        science = list(models)
        for model in science:
            name = model.meta.filename or "an input"
            if model.meta.exposure.type != "MIR_MRS":
                raise InputDataError(
                    f"{name} is {model.meta.exposure.type}, not MIR_MRS: an MRS association "
                    "holds MRS exposures only"
                )
            if (
                query_step_status(model, "photom") != "COMPLETE"
                and getattr(model.meta.cal_step, "mrs_calibrate", None) != "COMPLETE"
            ):
                raise InputDataError(
                    f"{name} is not calibrated (photom not COMPLETE): calwebb_spec3 takes "
                    "calwebb_spec2's cal files"
                )
        check_one_target(science)
        self.mrs_extract.suffix = self.mrs_extract.suffix or "x1d"
        self.mrs_extract.save_results = self.save_results
        self.mrs_extract.output_use_model = True
        spectra = []
        for model in progress(science, "MRS exposures", log):
            spectra.append(self.mrs_extract.run(self.mrs_centroid.run(model)))
        asn = getattr(models, "asn_table", None) or {}
        product = (asn.get("products") or [{}])[0].get("name") or "mrs"
        self.mrs_combine.save_results = self.save_results
        if self.mrs_combine.output_file is None:
            self.mrs_combine.output_file = product
        self.mrs_combine.run(spectra)
        log.info("Ending calwebb_spec3 (MRS point source)")


def _first_science_exp_type(input_data) -> str | None:
    """EXP_TYPE of the input's first science exposure, read without opening the association."""
    if isinstance(input_data, datamodels.JwstDataModel):
        return input_data.meta.exposure.type
    if hasattr(input_data, "__iter__") and not isinstance(input_data, (str, Path)):
        for model in input_data:
            if getattr(model.meta.asn, "exptype", "science") != "background":
                return model.meta.exposure.type
        return None
    path = Path(str(input_data))
    if path.suffix.lower() != ".json":
        return fits.getval(path, "EXP_TYPE", ext=0)
    asn = json.loads(path.read_text())
    for product in asn.get("products", []):
        for member in product.get("members", []):
            if member.get("exptype", "science") == "science":
                return fits.getval(path.parent / member["expname"], "EXP_TYPE", ext=0)
    return None
