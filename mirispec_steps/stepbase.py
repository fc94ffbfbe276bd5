"""The one base class of every mirispec_steps Step.

It adds to jwst's ``JwstStep`` what a plugin needs to behave like a native
step on a machine with or without CRDS:

- reference files resolved as ``--override_<reftype>`` -> packaged default
  (our own reftypes, and ``extract1d``) -> CRDS, where a CRDS client that calls
  ``sys.exit`` or never answers becomes a :class:`CrdsUnavailableError`
  naming the override to pass;
- no CRDS look-up of step parameter files (our steps have none in CRDS);
- ``meta.ref_file.<type>.name`` and ``meta.cal_step.<alias>`` recorded,
  without the CRDS context look-up that aborts offline runs;
- our log lines stay visible when the step runs inside a jwst pipeline,
  whose log configuration only knows jwst's logger names;
- our own product suffixes are stripped from input names.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from crds.core.exceptions import CrdsError
from jwst.lib.suffix import remove_suffix as jwst_remove_suffix
from jwst.stpipe import Pipeline as JwstPipeline
from jwst.stpipe import Step as JwstStep
from stdatamodels.jwst.datamodels import JwstDataModel, TSOMultiSpecModel
from stpipe import _log, crds_client

from mirispec_steps import __version__
from mirispec_steps.errors import CrdsUnavailableError, InputDataError, ReferenceFileError
from mirispec_steps.progress import progress
from mirispec_steps.references import packaged_reference

__all__ = [
    "LOGGER_NAME",
    "OWN_SUFFIXES",
    "MirispecPipeline",
    "MirispecStep",
    "ReferencesPerStep",
    "is_crds_failure",
]

LOGGER_NAME = "mirispec_steps"
log = logging.getLogger(__name__)

#: Product suffixes written by our steps; stripped from input names like jwst's own.
OWN_SUFFIXES = ("mrscal", "mrscen", "x1d", "x1dints", "scene_model", "residual", "profile")

#: Packaged default reference files, by reftype.
PACKAGED_DEFAULTS = {
    "extract1d": "mirispec_miri_lrs_extract1d.json",
    "psf": "mirispec_miri_lrs_psf.fits",
    "mrsresol": "mirispec_miri_mrs_resolution.json",
    "mrspsf": "mirispec_miri_mrs_psf.asdf",
}

#: Seconds to wait for a CRDS answer before giving up with a clear error.
CRDS_TIMEOUT = float(os.environ.get("MIRISPEC_CRDS_TIMEOUT", "60"))


def is_crds_failure(exc: BaseException) -> bool:
    """
    True for the ways the CRDS client fails when it has no server: its own
    errors, its ``sys.exit``, or no answer in time.

    Parameters
    ----------
    exc : BaseException
        What a CRDS look-up raised.

    Returns
    -------
    bool
        Whether it means "CRDS is unavailable" (anything else is a bug to
        report with its traceback).
    """
    return isinstance(exc, (CrdsError, SystemExit, TimeoutError))


def _call_guarded(function, *args):
    """Run a CRDS client call, turning ``sys.exit`` and hangs into exceptions."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # the CRDS client raises SystemExit
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="mirispec-crds")
    thread.start()
    thread.join(CRDS_TIMEOUT)
    if thread.is_alive():
        raise TimeoutError(f"no answer from CRDS within {CRDS_TIMEOUT:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _MirispecBehaviour:
    """What our steps and pipelines add to jwst's (mixed in before the jwst class)."""

    #: Name root of side products (plots, tables) given by a parent pipeline.
    _product_root = None

    #: Reference types for which the packaged default replaces CRDS.
    packaged_defaults = PACKAGED_DEFAULTS

    #: Suffix of the step's main product (``--suffix`` overrides it).
    product_suffix = None

    def default_suffix(self):
        """
        Suffix of the main product, e.g. ``x1d``.

        Returns
        -------
        str
            The suffix.
        """
        return self.product_suffix or super().default_suffix()

    def product_suffix_of(self, result) -> str:
        """
        The suffix of a product: ``x1dints`` for a time series of x1d spectra (as jwst).

        Parameters
        ----------
        result : DataModel
            A product of this step.

        Returns
        -------
        str
            The suffix to save it with.
        """
        suffix = self.suffix or self.default_suffix()
        if suffix == "x1d" and isinstance(result, TSOMultiSpecModel):
            return "x1dints"
        return suffix

    def save_model(self, model, suffix=None, idx=None, output_file=None, force=False, **components):
        """
        Save a product with stpipe's naming and the suffix that fits it (:meth:`product_suffix_of`).

        Returns
        -------
        str or list of str or None
            The path(s) written.
        """
        if suffix is None and isinstance(model, JwstDataModel):
            suffix = self.product_suffix_of(model)
        return super().save_model(
            model, suffix=suffix, idx=idx, output_file=output_file, force=force, **components
        )

    @staticmethod
    def get_stpipe_loggers():
        """
        Loggers configured by ``strun`` and ``Step.call``: jwst's and ours.

        Returns
        -------
        tuple of str
            Logger names.
        """
        return (*JwstStep.get_stpipe_loggers(), LOGGER_NAME)

    @classmethod
    def get_config_from_reference(cls, dataset, disable=None, crds_observatory=None):
        """
        Return no CRDS parameter file: none exists for our steps.

        Asking CRDS anyway would make ``Step.call`` abort on a machine
        without a CRDS server unless ``STPIPE_DISABLE_CRDS_STEPPARS`` is set.

        Returns
        -------
        configobj.ConfigObj
            An empty configuration.
        """
        return cls._empty_config()

    def get_pars(self, full_spec=True):
        """
        The step parameters, with in-memory datamodels given as their names.

        Parameters such as ``background`` accept datamodels from Python;
        stpipe logs and saves parameters as YAML, which cannot hold a model.

        Parameters
        ----------
        full_spec : bool
            Include every parameter of the spec (as stpipe's ``get_pars``).

        Returns
        -------
        dict
            Parameter names and values.
        """
        from stpipe.datamodel import AbstractDataModel

        def printable(value):
            if isinstance(value, AbstractDataModel):
                name = getattr(value.meta, "filename", None) or "in memory"
                return f"<{type(value).__name__} {name}>"
            if isinstance(value, (list, tuple)):
                return [printable(item) for item in value]
            return value

        return {key: printable(value) for key, value in super().get_pars(full_spec).items()}

    def run(self, *args):
        """
        Run the step, keeping our log lines visible inside foreign pipelines.

        When a jwst pipeline runs us (as a hook or a substep), its log
        configuration covers only jwst's logger names; our logger gets the
        same handlers for the duration of this run.

        Returns
        -------
        object
            The step result.
        """
        applied = _log.LogConfig.applied
        our_logger = logging.getLogger(LOGGER_NAME)
        added = []
        previous_level = our_logger.level
        if applied is not None:
            added = [h for h in applied.handlers if h not in our_logger.handlers]
            for handler in added:
                our_logger.addHandler(handler)
            if applied.level is not logging.NOTSET:
                our_logger.setLevel(applied.level)
        try:
            return super().run(*args)
        finally:
            for handler in added:
                our_logger.removeHandler(handler)
            our_logger.setLevel(previous_level)

    def get_reference_file(self, input_file, reference_file_type):
        """
        Resolve a reference file: override, packaged default, then CRDS.

        Parameters
        ----------
        input_file : JwstDataModel
            The input, whose metadata CRDS uses to select the file.
        reference_file_type : str
            The reftype, e.g. ``"extract1d"``.

        Returns
        -------
        str
            Path of the reference file, or ``"N/A"``.

        Raises
        ------
        CrdsUnavailableError
            If CRDS cannot be reached (or gives up) and no override was given.
        """
        override = self.get_ref_override(reference_file_type)
        if override is not None:
            if isinstance(override, str) and override != "N/A" and not Path(override).exists():
                raise ReferenceFileError(
                    f"override_{reference_file_type}: reference file {override} does not exist"
                )
            return super().get_reference_file(input_file, reference_file_type)
        if reference_file_type in self.packaged_defaults:
            path = packaged_reference(self.packaged_defaults[reference_file_type])
            self._reference_files_used.append((reference_file_type, Path(path).name))
            log.info(f"Using packaged default {reference_file_type} reference file {path}")
            return path
        self._crds_used = True
        try:
            return _call_guarded(super().get_reference_file, input_file, reference_file_type)
        except BaseException as exc:
            if not is_crds_failure(exc):
                raise
            if isinstance(exc, SystemExit):
                exc = "the CRDS client gave up: no server and no cache"
            raise CrdsUnavailableError(
                f"Cannot get a '{reference_file_type}' reference file from CRDS ({exc}). "
                f"Pass one with --override_{reference_file_type}=<path> "
                f"(Python: override_{reference_file_type}='<path>')."
            ) from None

    def side_path(self, model, suffix: str, extension: str, index: int | None = None) -> str:
        """
        Path of a side product (table, plot) named like the main product.

        Parameters
        ----------
        model : DataModel
            The input (its file name is the base unless ``output_file`` is set).
        suffix : str
            Product suffix, e.g. ``centroid``.
        extension : str
            File extension with the dot, e.g. ``.png``.
        index : int or None
            Position of the model in a container input (numbered names).

        Returns
        -------
        str
            The path.
        """
        path = self.make_output_path(
            basepath=self.output_file or self._product_root or model.meta.filename,
            suffix=suffix,
            idx=index,
        )
        return str(path).rsplit(".", 1)[0] + extension

    def plot_path(self, result, model, index: int | None = None) -> str:
        """
        Path of the step's diagnostic PNG: the main product's name with ``.png``.

        Parameters
        ----------
        result : DataModel
            The product (its kind decides the suffix).
        model : DataModel
            The input.
        index : int or None
            Position of the model in a container input.

        Returns
        -------
        str
            The path.
        """
        return self.side_path(model, self.product_suffix_of(result), ".png", index)

    def process_each(self, input_data, extract_one):
        """
        Run ``extract_one(model, index)`` on a model, or on every member of a container.

        Parameters
        ----------
        input_data : str, DataModel or ModelContainer
            The step's input (an association gives a container).
        extract_one : callable
            Processes one model; ``index`` is its position in a container, or
            None for a single model.

        Returns
        -------
        DataModel or ModelContainer
            One result per input model; a container only for several.
        """
        from jwst.datamodels import ModelContainer

        model = self.prepare_output(input_data, make_copy=False)
        if isinstance(model, ModelContainer):
            if len(model) == 0:
                raise InputDataError("the input container holds no exposures")
            results = ModelContainer()
            members = enumerate(model)
            for index, member in progress(members, "exposures", log, total=len(model)):
                results.append(extract_one(member, index))
            return results if len(results) > 1 else results[0]
        result = extract_one(model, None)
        if model is not input_data and result is not model:
            model.close()
        return result

    def skipped(self, model, reason: str):
        """
        A copy of ``model`` marked SKIPPED, with ``reason`` logged (the input is untouched).

        Parameters
        ----------
        model : JwstDataModel
            The input that this step does not apply to.
        reason : str
            Logged as a warning.

        Returns
        -------
        JwstDataModel
            The marked copy.
        """
        log.warning(f"{reason}: skipped")
        result = model.copy()
        self.record_step_status(result, "SKIPPED")
        return result

    def record_step_status(self, model, status: str) -> None:
        """
        Set ``meta.cal_step.<alias>`` on a model.

        Parameters
        ----------
        model : JwstDataModel
            Model to update.
        status : str
            ``"COMPLETE"`` or ``"SKIPPED"``.
        """
        setattr(model.meta.cal_step, self.class_alias, status)

    def finalize_result(self, result, reference_files_used):
        """
        Record software version and reference files, without asking CRDS offline.

        Parameters
        ----------
        result : JwstDataModel
            The output model.
        reference_files_used : list of tuple
            (reftype, path) pairs used by the step.
        """
        if not isinstance(result, JwstDataModel):
            return
        result.meta.calibration_software_version = __version__
        for reftype, filename in reference_files_used:
            node = getattr(result.meta.ref_file, reftype, None)
            if node is not None:
                node.name = filename
        if reference_files_used and getattr(self, "_crds_used", False):
            result.meta.ref_file.crds.sw_version = crds_client.get_svn_version()
            try:
                context = _call_guarded(crds_client.get_context_used, result.crds_observatory)
            except Exception:
                context = "unavailable (offline)"
            result.meta.ref_file.crds.context_used = context
        if self.class_alias:
            if not hasattr(result, "cal_logs"):
                result.cal_logs = {}
            setattr(result.cal_logs, self.class_alias, self._log_records)

    def remove_suffix(self, name):
        """
        Strip a known jwst or mirispec_steps suffix from a file name.

        Parameters
        ----------
        name : str
            File name (without extension).

        Returns
        -------
        tuple of (str, str)
            The name without suffix, and the separator.
        """
        root, separator = jwst_remove_suffix(name)
        for suffix in OWN_SUFFIXES:
            for sep in ("_", "-"):
                if root.endswith(sep + suffix):
                    return root[: -len(sep + suffix)], sep
        return root, separator


class MirispecStep(_MirispecBehaviour, JwstStep):
    """Base class of the package's steps (not used directly)."""


class ReferencesPerStep:
    """
    Pipelines that resolve each step's reference files when that step runs.

    jwst pipelines prefetch every reftype of every unskipped step before the
    first one runs. Mixed in first, this lets a step that will not run for
    this input (assign_wcs on data that already has a WCS, a jwst step the
    pipeline skips for the mode) never ask CRDS, keeps our own reftypes (not
    in CRDS) out of CRDS queries, and lets the step that needs a missing file
    report it with the override to pass.
    """

    def prefetch(self, *args):
        """Resolve no reference files up front (each step does when it runs)."""


class MirispecPipeline(_MirispecBehaviour, ReferencesPerStep, JwstPipeline):
    """Base class of the package's pipelines (not used directly)."""

    def substep_output(self, step, model, tag: str | None = None) -> None:
        """
        Let a substep save its product next to the pipeline's, named after ``model``.

        Parameters
        ----------
        step : Step
            The substep.
        model : DataModel
            The input whose file name the product is named after (unless
            the pipeline has an ``output_file``).
        tag : str or None
            Inserted before the suffix (``<root>_<tag>_<suffix>``); ``""``
            for ``<root>_<suffix>``; None leaves the step alone. A step given
            its own ``output_file`` keeps it.
        """
        if tag is None or not hasattr(model, "meta"):
            # (a container's members keep their own names)
            return
        name = self.output_file or getattr(model.meta, "filename", None) or "mirispec"
        root, _ = self.remove_suffix(Path(name).stem)
        named = f"{root}_{tag}" if tag else root
        # stpipe saves every step that has an output_file: set it only for the
        # steps that save; plots and tables follow the product root either way.
        step._product_root = named
        if step.save_results and step.output_file is None:
            step.output_file = named
