"""MrsPointSourcePipeline: MRS slope image to point-source spectra, without cubes."""

from __future__ import annotations

import logging
from pathlib import Path

from jwst.assign_wcs import AssignWcsStep
from jwst.datamodels import ModelContainer
from stdatamodels.jwst import datamodels

from mirispec_steps.crds_guard import call_guarded, is_crds_failure, is_crds_unreachable
from mirispec_steps.errors import CrdsUnavailableError, InputDataError
from mirispec_steps.mrs.calibrate_step import MrsCalibrateStep
from mirispec_steps.mrs.centroid_step import MrsCentroidStep
from mirispec_steps.mrs.combine import check_one_target
from mirispec_steps.mrs.combine_step import MrsCombineStep
from mirispec_steps.mrs.extract_step import MrsExtractStep
from mirispec_steps.mrs.geometry import band_letter, is_mrs_exposure
from mirispec_steps.progress import progress
from mirispec_steps.stepbase import MirispecPipeline, missing_message

__all__ = ["MrsPointSourcePipeline"]

log = logging.getLogger(__name__)

#: Reference types jwst's assign_wcs asks CRDS for on MIRI MRS data.
ASSIGN_WCS_REFTYPES = ("distortion", "regions", "specwcs", "wavelengthrange")


class MrsPointSourcePipeline(MirispecPipeline):
    """
    MRS point-source spectra from slope images: assign_wcs, calibrate, centroid, extract.

    For each exposure: jwst's ``assign_wcs`` when it has no WCS yet (archive
    ``rate`` files; skipped when the WCS is there or the MRS steps are given
    an ``mrsmaps`` file), then ``mrs_calibrate`` (background, fringe flat,
    photom, in variance space), ``mrs_centroid`` (source position per
    spectral bin) and ``mrs_extract`` (one spectrum per channel). The x1d is
    the product (``<root>_x1d``); intermediate products are saved on
    request (``--steps.mrs_calibrate.save_results=True`` gives ``mrscal``,
    ``--steps.mrs_centroid.save_results=True`` gives ``mrscen``), and
    ``save_plots`` turns on every step's diagnostic PNGs.

    A list or association of exposures of one target (dithers, grating
    settings, both detectors) is processed exposure by exposure (backgrounds
    go to ``--steps.mrs_calibrate.background``), with progress in the log;
    then ``mrs_combine`` combines the dithers of every band, removes residual
    fringes and the 1B spectral leak and stitches the bands into one
    spectrum, saved as ``<product>_c1d`` (the association's product name,
    else the first exposure's) next to the per-exposure x1d files.
    ``combine=False`` keeps only the x1d files.
    """

    class_alias = "mrs_point_source"
    product_suffix = "x1d"

    spec = """
    save_plots = boolean(default=False)  # every step's diagnostic PNGs
    combine = boolean(default=True)  # several exposures: combine dithers and stitch bands into <product>_c1d
    """  # noqa: E501

    step_defs = {
        "assign_wcs": AssignWcsStep,
        "mrs_calibrate": MrsCalibrateStep,
        "mrs_centroid": MrsCentroidStep,
        "mrs_extract": MrsExtractStep,
        "mrs_combine": MrsCombineStep,
    }

    def process(self, input_data):
        """
        Run the chain on one exposure or each exposure of a container.

        Parameters
        ----------
        input_data : str, IFUImageModel or ModelContainer
            MRS slope image(s) in DN/s (``rate``), with or without a WCS.

        Returns
        -------
        MRSMultiSpecModel or ModelContainer
            One x1d per exposure (the combination is saved, not returned:
            ``MrsCombineStep.call`` on this container gives it in Python).
        """
        if self.save_plots:
            for step in (self.mrs_calibrate, self.mrs_centroid, self.mrs_extract, self.mrs_combine):
                step.save_plots = True
        model = self.prepare_output(input_data, make_copy=False)
        if not isinstance(model, ModelContainer):
            self._check_before_work([model])
            for step in (self.mrs_calibrate, self.mrs_centroid, self.mrs_extract):
                # Intermediate products and plots are named after the pipeline's product.
                self.substep_output(step, model, "" if self.output_file else None)
            return self._one_exposure(model)
        science = [m for m in model if getattr(m.meta.asn, "exptype", None) != "background"]
        backgrounds = [m for m in model if getattr(m.meta.asn, "exptype", None) == "background"]
        if not science:
            raise InputDataError("the input association holds no science exposure")
        self._check_before_work(science)
        results = ModelContainer()
        # Each x1d is named after its exposure (<root>_x1d), not the association's product.
        self.output_use_model = True
        given = self.mrs_calibrate.background
        steps = (self.mrs_calibrate, self.mrs_centroid, self.mrs_extract)
        named = {step: step.output_file for step in steps}
        try:
            for exposure in progress(science, "MRS exposures", log):
                if backgrounds and not given:
                    # The association's backgrounds taken with this exposure's grating setting.
                    self.mrs_calibrate.background = _same_setting(backgrounds, exposure) or None
                root = self.remove_suffix(Path(exposure.meta.filename or "mrs").stem)[0]
                for step in steps:
                    # Intermediate products and plots are named after their own exposure.
                    step._product_root = root
                    if step.save_results and named[step] is None:
                        step.output_file = root
                results.append(self._one_exposure(exposure))
        finally:
            self.mrs_calibrate.background = given
            for step in steps:
                step.output_file = named[step]
        spectra = [result for result in results if isinstance(result, datamodels.MRSMultiSpecModel)]
        if self._combines(science) and len(spectra) > 1:
            self._combine(spectra, model, science)
        return results

    def _combines(self, exposures) -> bool:
        return bool(self.combine) and not self.mrs_combine.skip and len(exposures) > 1

    def _combine(self, spectra, container, science) -> None:
        """mrs_combine on the exposures' x1d, saved as ``<product>_c1d`` with the pipeline's."""
        asn = getattr(container, "asn_table", None) or {}
        products = asn.get("products") or [{}]
        name = (
            products[0].get("name")
            or self.remove_suffix(Path(science[0].meta.filename or "mrs").stem)[0]
        )
        step = self.mrs_combine
        saved = step.save_results, step.output_file
        step.save_results = step.save_results or self.save_results
        step.output_file = step.output_file or name
        step._product_root = step.output_file
        try:
            step.run(spectra)
        finally:
            step.save_results, step.output_file = saved

    def _check_before_work(self, exposures) -> None:
        """Every exposure is an MRS image and every reference file can be had, before any work."""
        missing = []
        for model in exposures:
            name = f" {model.meta.filename}" if getattr(model.meta, "filename", None) else ""
            if not isinstance(model, datamodels.IFUImageModel):
                raise InputDataError(
                    f"input{name} is a {type(model).__name__}; expected an MRS rate image "
                    "(IFUImageModel)"
                )
            if not is_mrs_exposure(model):
                if self.parent is None:
                    kind = f"{model.meta.instrument.name} {model.meta.exposure.type}"
                    raise InputDataError(
                        f"Input{name} is {kind}, not MRS: {self.class_alias} does not apply"
                    )
                continue
            exclude = ()
            if self._needs_assign_wcs(model):
                missing.extend(self._missing_assign_wcs_references(model))
                exclude = ("mrsmaps",)  # the steps after assign_wcs get a WCS
            elif getattr(model.meta, "wcs", None) is None and self.assign_wcs.skip:
                self._with_wcs(model)  # says what to do
            steps = {
                name: getattr(self, name)
                for name in ("mrs_calibrate", "mrs_centroid", "mrs_extract")
                if not getattr(self, name).skip
            }
            for name, step in steps.items():
                missing.extend(step.missing_references(model, f"steps.{name}.", exclude))
        mrs = [model for model in exposures if is_mrs_exposure(model)]
        check_one_target(mrs)
        if self._combines(mrs) and _has_leak_bands(mrs):
            missing.extend(self.mrs_combine.missing_references(mrs[0], "steps.mrs_combine."))
        if missing:
            raise CrdsUnavailableError(missing_message(sorted(set(missing), key=missing.index)))

    def _needs_assign_wcs(self, model) -> bool:
        return (
            getattr(model.meta, "wcs", None) is None
            and self.mrs_centroid.get_ref_override("mrsmaps") is None
            and not self.assign_wcs.skip
        )

    def _missing_assign_wcs_references(self, model) -> list[str]:
        """assign_wcs's reftypes CRDS cannot give (offline: every one without an override)."""
        step = self.assign_wcs
        missing = []
        for reftype in step.reference_file_types:
            if step.get_ref_override(reftype) is not None:
                continue
            try:
                call_guarded(step.get_reference_file, model, reftype)
            except BaseException as exc:
                if not is_crds_failure(exc):
                    raise
                value = "<file>" if reftype in ASSIGN_WCS_REFTYPES else "N/A"
                reason = "CRDS cannot be reached" if is_crds_unreachable(exc) else str(exc)
                missing.append(
                    f"  assign_wcs {reftype}: {reason}; pass "
                    f"--steps.assign_wcs.override_{reftype}={value}"
                )
        return missing

    def _one_exposure(self, model):
        log.info(f"MRS point-source chain on {model.meta.filename}")
        model = self._with_wcs(model)
        calibrated = self.mrs_calibrate.run(model)
        if getattr(calibrated.meta.cal_step, "mrs_calibrate", None) == "SKIPPED":
            # Not MRS data: the calibration said so; there is nothing to extract.
            return calibrated
        located = self.mrs_centroid.run(calibrated)
        return self.mrs_extract.run(located)

    def _with_wcs(self, model):
        """The exposure with a WCS from assign_wcs, unless it has one or needs none."""
        if getattr(model.meta, "wcs", None) is not None:
            log.info("Input has a WCS: assign_wcs not needed")
            return model
        if self.mrs_centroid.get_ref_override("mrsmaps") is not None:
            log.info("Geometry from the mrsmaps file: assign_wcs not needed")
            return model
        if self.assign_wcs.skip:
            raise InputDataError(
                "the input has no WCS and assign_wcs is skipped: run it, or pass "
                "--steps.mrs_centroid.override_mrsmaps and --steps.mrs_extract.override_mrsmaps"
            )
        try:
            with_wcs = self.assign_wcs.run(model)
        except BaseException as exc:
            # The CRDS client exits the interpreter (or raises its own errors)
            # when it has no server and no cache.
            if not is_crds_failure(exc):
                raise
            step = self.assign_wcs
            unset = [r for r in step.reference_file_types if step.get_ref_override(r) is None]
            overrides = " ".join(
                f"--steps.assign_wcs.override_{r}="
                + ("<file>" if r in ASSIGN_WCS_REFTYPES else "N/A")
                for r in unset
            )
            raise CrdsUnavailableError(
                "assign_wcs could not get its reference files from CRDS (no server or "
                f"cache: {exc}). Offline, pass every one of them: {overrides}"
            ) from None
        if getattr(with_wcs.meta.cal_step, "assign_wcs", None) != "COMPLETE":
            raise InputDataError("assign_wcs did not complete: no WCS for this exposure")
        return with_wcs


def _has_leak_bands(exposures) -> bool:
    """1B (SHORT detector, MEDIUM) and 3A (LONG detector, SHORT) both among the exposures."""
    bands = set()
    for model in exposures:
        detector = str(model.meta.instrument.detector).upper()
        letter = band_letter(model.meta.instrument.band)
        bands.add(("1" if detector == "MIRIFUSHORT" else "3") + letter)
    return {"1B", "3A"} <= bands


def _same_setting(exposures, model) -> list:
    """The exposures taken on ``model``'s detector with its band."""
    instrument = model.meta.instrument
    return [
        exposure
        for exposure in exposures
        if exposure.meta.instrument.detector == instrument.detector
        and exposure.meta.instrument.band == instrument.band
    ]
