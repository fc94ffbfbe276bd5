"""The one base class of every mirispec_steps Step.

It adds to jwst's ``JwstStep`` what a plugin needs to behave like a native
step on a machine with or without CRDS:

- reference files resolved as ``--override_<reftype>`` -> CRDS for jwst's
  reftypes (a packaged fallback only when CRDS cannot be reached, said in a
  warning), ``--override_<reftype>`` -> packaged default for our own
  reftypes; a CRDS client that calls ``sys.exit`` or never answers becomes a
  :class:`CrdsUnavailableError` naming the override to pass (see
  :mod:`mirispec_steps.crds_guard`);
- no CRDS look-up of step parameter files (our steps have none in CRDS);
- ``meta.ref_file.<type>.name`` and ``meta.cal_step.<alias>`` recorded,
  without the CRDS context look-up that aborts offline runs;
- our log lines stay visible when the step runs inside a jwst pipeline,
  whose log configuration only knows jwst's logger names;
- our own product suffixes are stripped from input names.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jwst.lib.suffix import remove_suffix as jwst_remove_suffix
from jwst.stpipe import Pipeline as JwstPipeline
from jwst.stpipe import Step as JwstStep
from stdatamodels.jwst.datamodels import JwstDataModel, TSOMultiSpecModel
from stpipe import _log, crds_client

from mirispec_steps import __version__
from mirispec_steps.core.blas import one_blas_thread
from mirispec_steps.crds_guard import call_guarded, is_crds_failure, is_crds_unreachable
from mirispec_steps.errors import CrdsUnavailableError, InputDataError, ReferenceFileError
from mirispec_steps.log_sharing import LENDING
from mirispec_steps.progress import progress
from mirispec_steps.references import packaged_reference, references_used

__all__ = [
    "LOGGER_NAME",
    "OWN_SUFFIXES",
    "MirispecPipeline",
    "MirispecStep",
    "ReferencesPerStep",
    "missing_line",
    "missing_message",
    "strip_suffix",
]

LOGGER_NAME = "mirispec_steps"
log = logging.getLogger(__name__)

#: Product suffixes written by our steps; stripped from input names like jwst's own
#: (longest first, so that ``box_x1d`` goes before ``x1d``).
OWN_SUFFIXES = tuple(
    sorted(
        {
            "mrscal", "mrscen", "x1d", "x1dints", "scene_model", "residual", "profile",
            *(f"{method}_{kind}" for method in ("box", "optimal", "aperture")
              for kind in ("x1d", "x1dints")),
        },
        key=len,
        reverse=True,
    )
)  # fmt: skip

#: Packaged files used for jwst reftypes only when CRDS cannot be reached.
CRDS_FALLBACKS = {
    "extract1d": "mirispec_miri_lrs_extract1d.json",
    "psf": "mirispec_miri_lrs_psf.fits",
}
#: The package's own reftypes (never in CRDS): override, else the packaged default.
OWN_REFTYPES = {
    "mrsresol": "mirispec_miri_mrs_resolution.json",
    "mrspsf": "mirispec_miri_mrs_psf.asdf",
    "mrsmaps": None,  # describes one exposure's geometry: no default, override only
}


def strip_suffix(name: str) -> tuple[str, str]:
    """
    A file name (without extension) without its jwst or mirispec_steps product suffix.

    Parameters
    ----------
    name : str
        E.g. ``"jw01_nrs1_box_x1d"``.

    Returns
    -------
    tuple of (str, str)
        The root and the separator before the suffix.

    Examples
    --------
    >>> strip_suffix("jw0001_mirimage_box_x1d")
    ('jw0001_mirimage', '_')
    """
    for suffix in OWN_SUFFIXES:
        for sep in ("_", "-"):
            if name.endswith(sep + suffix):
                return name[: -len(sep + suffix)], sep
    return jwst_remove_suffix(name)


def missing_line(reftype: str, reason: BaseException | str, prefix: str = "") -> str:
    """One line of :func:`missing_message`: the reftype, why it is missing, the flag to pass."""
    return f"  {reftype}: {reason}; pass --{prefix}override_{reftype}=<path>"


def missing_message(lines: list[str]) -> str:
    """
    One error message listing every missing reference and its override flag.

    Examples
    --------
    >>> print(missing_message([missing_line("apcorr", "CRDS cannot be reached")]))
    Reference files missing, nothing was done:
      apcorr: CRDS cannot be reached; pass --override_apcorr=<path>
    (Python: override_<reftype>='<path>'; in a pipeline: steps={'<step>': {...}})
    """
    return (
        "Reference files missing, nothing was done:\n"
        + "\n".join(lines)
        + "\n(Python: override_<reftype>='<path>'; in a pipeline: steps={'<step>': {...}})"
    )


class _MirispecBehaviour:
    """What our steps and pipelines add to jwst's (mixed in before the jwst class)."""

    #: Name root of side products (plots, tables) given by a parent pipeline.
    _product_root = None

    #: True while a pipeline checks its steps' references before any work.
    _preflight = False

    #: Writes waiting for the enclosing pipeline to succeed (set by a MirispecPipeline).
    _deferred = None

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
        The suffix of a product: ``...x1dints`` for a time series of x1d spectra (as jwst).

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
        if suffix.endswith("x1d") and isinstance(result, TSOMultiSpecModel):
            return f"{suffix}ints"
        return suffix

    def save_model(self, model, suffix=None, idx=None, output_file=None, force=False, **components):
        """
        Save a product with stpipe's naming and the suffix that fits it (:meth:`product_suffix_of`).

        A product about to replace an existing file is announced with a
        warning. Inside one of the package's pipelines the write waits until
        the whole pipeline has succeeded (a failed run writes nothing).

        Returns
        -------
        str or list of str or None
            The path(s) written (None when the write waits for the pipeline).
        """
        if suffix is None and isinstance(model, JwstDataModel):
            suffix = self.product_suffix_of(model)
        # The name as it is now: a pipeline that names each exposure's products in turn
        # changes output_file before the deferred write runs.
        output_file = output_file or self.output_file or None

        def save():
            if isinstance(model, JwstDataModel) and (force or self.save_results or output_file
                                                     or self.output_file):  # fmt: skip
                path = self._stpipe_output_path(model, suffix, idx, output_file, components)
                if path is not None and Path(path).exists():
                    log.warning(f"Replacing the existing file {path}")
            return super(_MirispecBehaviour, self).save_model(
                model, suffix=suffix, idx=idx, output_file=output_file, force=force, **components
            )

        if self._deferred is not None:
            self._deferred.append(save)
            return None
        return save()

    def _stpipe_output_path(self, model, suffix, idx, output_file, components) -> str | None:
        """The path stpipe's ``save_model`` will write ``model`` to (one model, not a container)."""
        output_file = output_file or self.output_file
        if self.output_use_model or (output_file is None and not self.search_output_file):
            output_file, idx = model.meta.filename, None
        try:
            return str(self.make_output_path(basepath=output_file, suffix=suffix, idx=idx,
                                             **components))  # fmt: skip
        except (AttributeError, TypeError):  # no name to derive one from: stpipe decides
            return None

    def write_side_product(self, description: str, path: str, write) -> str:
        """
        Write a side product (plot, table, image) next to the main product, saying so.

        Parameters
        ----------
        description : str
            What it is, for the log ("the centroid plot").
        path : str
            Where.
        write : callable
            ``write(path)`` writes the file.

        Returns
        -------
        str
            ``path``. Inside one of the package's pipelines the file is
            written once the whole pipeline has succeeded.
        """

        def run():
            if Path(path).exists():
                log.warning(f"Replacing the existing file {path}")
            write(path)
            log.info(f"Saved {description} {path}")

        if self._deferred is not None:
            self._deferred.append(run)
        else:
            run()
        return path

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
        Run the step on one BLAS thread, keeping our log lines visible inside foreign pipelines.

        When a jwst pipeline runs us (as a hook or a substep), its log
        configuration covers only jwst's logger names; our logger gets the
        same handlers for the duration of this run. BLAS runs on one thread
        (:mod:`mirispec_steps.core.blas`): the systems are small, and the
        results are then the same whatever the BLAS threads.

        Returns
        -------
        object
            The step result.
        """
        applied = _log.LogConfig.applied
        loan = None
        if applied is not None:
            # Counted per run: a concurrent run in another thread keeps its handlers.
            loan = LENDING.lend([LOGGER_NAME], applied.handlers, applied.level)
        try:
            # Small linear algebra: faster, and the same sums everywhere (core.blas).
            with one_blas_thread():
                return super().run(*args)
        finally:
            if loan is not None:
                LENDING.give_back(loan)

    def get_reference_file(self, input_file, reference_file_type):
        """
        Resolve a reference file: override; then CRDS, or the packaged default.

        jwst's reftypes come from the override, else CRDS, else (only when CRDS
        cannot be reached) the packaged fallback where one exists, with a
        warning; the product records it. The package's own reftypes
        (``mrsresol``, ``mrspsf``, ``mrsmaps``) come from the override, else
        the packaged default.

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
        ReferenceFileError
            An override names a file that does not exist.
        CrdsUnavailableError
            CRDS cannot be reached (or gives up), no override was given and
            there is no packaged fallback; or an own reftype without default
            (``mrsmaps``) was not given.
        """
        reftype = reference_file_type
        override = self.get_ref_override(reftype)
        if override is not None:
            if isinstance(override, str) and override != "N/A" and not Path(override).exists():
                raise ReferenceFileError(
                    f"override_{reftype}: reference file {override} does not exist"
                )
            return super().get_reference_file(input_file, reftype)
        if reftype in OWN_REFTYPES:
            if OWN_REFTYPES[reftype] is None:
                raise CrdsUnavailableError(f"no '{reftype}' file was given")
            return self._packaged(reftype, OWN_REFTYPES[reftype], "packaged default")
        self._crds_used = True
        try:
            return call_guarded(super().get_reference_file, input_file, reftype)
        except BaseException as exc:
            if not is_crds_failure(exc):
                raise
            reason = "no server and no cache" if isinstance(exc, SystemExit) else str(exc)
            if not is_crds_unreachable(exc):
                raise CrdsUnavailableError(
                    f"CRDS has no '{reftype}' reference file for these data ({reason.strip()})"
                ) from None
            if reftype in CRDS_FALLBACKS:
                if not self._preflight:
                    log.warning(
                        f"CRDS cannot be reached ({reason}): using the packaged fallback "
                        f"{CRDS_FALLBACKS[reftype]} for '{reftype}' (pass --override_{reftype} "
                        "to choose the file)"
                    )
                return self._packaged(
                    reftype, CRDS_FALLBACKS[reftype], "fallback, CRDS unreachable"
                )
            raise CrdsUnavailableError(f"CRDS cannot be reached ({reason})") from None

    def _packaged(self, reftype: str, filename: str, role: str) -> str:
        """A packaged file, recorded in the product as ``mirispec_steps://<name> (<role>)``."""
        path = packaged_reference(filename)
        if not self._preflight:
            self._reference_files_used.append((reftype, f"mirispec_steps://{filename} ({role})"))
            log.info(f"Using the {role} {reftype} reference file {path}")
        return path

    def needed_references(self, model) -> list[str]:
        """
        The reftypes this step will ask for when it processes ``model``.

        Parameters
        ----------
        model : DataModel
            One input exposure.

        Returns
        -------
        list of str
            Reftypes (by default all of ``reference_file_types``).
        """
        return list(self.reference_file_types)

    def missing_references(self, model, prefix: str = "", exclude=()) -> list[str]:
        """
        Which of the references this step needs for ``model`` cannot be had, without any work.

        Parameters
        ----------
        model : DataModel
            One input exposure.
        prefix : str
            Written before each ``override_<reftype>`` flag (``steps.<name>.``
            inside a pipeline).
        exclude : tuple of str
            Reftypes an earlier step makes unnecessary (``mrsmaps`` after assign_wcs).

        Returns
        -------
        list of str
            One line per missing reftype with the flag to pass.
        """
        return self._look_up_references(model, prefix, exclude)[1]

    def available_references(self, model) -> dict[str, str]:
        """
        The references this step needs for ``model`` that can be had, quietly.

        Used to resolve references once and hand them to many runs (the
        batch runner passes them as overrides); what cannot be had is left
        out, for the run itself to report.

        Parameters
        ----------
        model : DataModel
            One input exposure.

        Returns
        -------
        dict
            Reftype to path (or ``"N/A"``), for reftypes without an override.
        """
        return self._look_up_references(model, "", (), skip_overridden=True)[0]

    def _look_up_references(self, model, prefix, exclude, skip_overridden=False, quiet=True):
        """(found, missing lines) for the needed reftypes; ``quiet``: no logging, no recording."""
        found, missing = {}, []
        self._preflight = quiet
        try:
            for reftype in self.needed_references(model):
                if reftype in exclude:
                    continue
                if skip_overridden and self.get_ref_override(reftype) is not None:
                    continue
                try:
                    found[reftype] = self.get_reference_file(model, reftype)
                except CrdsUnavailableError as exc:
                    missing.append(missing_line(reftype, exc, prefix))
        finally:
            self._preflight = False
        return found, missing

    def resolve_references(self, model) -> dict[str, str]:
        """
        Every reference this step needs for ``model``, or one error naming all that are missing.

        Parameters
        ----------
        model : DataModel
            One input exposure.

        Returns
        -------
        dict
            Reftype to path (or ``"N/A"``).

        Raises
        ------
        CrdsUnavailableError
            Listing every missing reftype and its override flag (nothing was done).
        """
        resolved, missing = self._look_up_references(model, "", (), quiet=False)
        if missing:
            raise CrdsUnavailableError(missing_message(missing))
        return resolved

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

    def input_members(self, *inputs) -> list:
        """
        Every exposure of an input that is combined into one product (a reference file, a c1d).

        Parameters
        ----------
        *inputs : str, DataModel, list or ModelContainer
            A file, a model, a list of either, or an association; or several
            files or models (``strun <alias> a.fits b.fits`` passes each).

        Returns
        -------
        list of DataModel
            The opened exposures; the product is named after the first.

        Raises
        ------
        InputDataError
            No exposure in the input.
        """
        from jwst.datamodels import ModelContainer

        input_data = inputs[0] if len(inputs) == 1 else list(inputs)
        if isinstance(input_data, list | tuple):
            input_data = ModelContainer(list(input_data))
        opened = self.prepare_output(input_data, make_copy=False)
        members = list(opened) if isinstance(opened, ModelContainer) else [opened]
        if not members:
            raise InputDataError("the input holds no exposures")
        if self.search_attr("_input_filename") is None:
            # A list of models has no name of its own: the product is named after the first.
            self._input_filename = members[0].meta.filename
        return members

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
        Input of another mode: an error when the step runs on its own, SKIPPED inside a pipeline.

        Inside a pipeline (ours, or jwst's as a substep or hook) the step
        returns a copy of ``model`` marked SKIPPED, as jwst's steps do; run on
        its own it refuses, so that nothing is written for data it cannot use.

        Parameters
        ----------
        model : JwstDataModel
            The input that this step does not apply to (never modified).
        reason : str
            What the input is.

        Returns
        -------
        JwstDataModel
            The marked copy.

        Raises
        ------
        InputDataError
            When the step runs on its own.
        """
        if self.parent is None:
            raise InputDataError(f"{reason}: {self.class_alias} does not apply to it")
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
        # Reference-file models (lrs_psf's product) have no meta.ref_file.
        has_ref_file = "ref_file" in result.meta._schema.get("properties", {})
        for reftype, filename in reference_files_used:
            if has_ref_file and hasattr(result.meta.ref_file, reftype):
                getattr(result.meta.ref_file, reftype).name = filename
        if reference_files_used:
            # jwst's schemas name only some reftypes (not apcorr, psf, mrspsf...): all go here.
            recorded = references_used(result)
            recorded.update({reftype: str(name) for reftype, name in reference_files_used})
            result.mirispec_references = recorded
        if has_ref_file and reference_files_used and getattr(self, "_crds_used", False):
            result.meta.ref_file.crds.sw_version = crds_client.get_svn_version()
            try:
                context = call_guarded(crds_client.get_context_used, result.crds_observatory)
            except BaseException as exc:
                if not is_crds_failure(exc):
                    raise
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
        return strip_suffix(name)


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
    """
    Base class of the package's pipelines (not used directly).

    Every file the pipeline and its steps would write (products, plots,
    tables) waits until the whole run has succeeded: a run that fails writes
    nothing.
    """

    def run(self, *args):
        """
        Run the pipeline; write its files only when every step succeeded.

        Returns
        -------
        object
            The pipeline's product.
        """
        parent_pending = getattr(self.parent, "_deferred", None)
        pending = parent_pending if parent_pending is not None else []
        steps = [getattr(self, name) for name in self.step_defs]
        ours = [step for step in (self, *steps) if isinstance(step, _MirispecBehaviour)]
        for step in ours:
            step._deferred = pending
        try:
            result = super().run(*args)
        finally:
            for step in ours:
                step._deferred = None
        if parent_pending is None:
            for write in pending:
                write()
        return result

    def check_step_references(self, model, steps: dict) -> None:
        """
        Before any work: every reference the given substeps need for ``model``, or one error.

        Parameters
        ----------
        model : DataModel
            One input exposure.
        steps : dict
            Substep name to substep, for the steps that will run.

        Raises
        ------
        CrdsUnavailableError
            Listing every missing reftype of every step with its
            ``--steps.<step>.override_<reftype>`` flag.
        """
        missing = []
        for name, step in steps.items():
            missing.extend(step.missing_references(model, prefix=f"steps.{name}."))
        if missing:
            raise CrdsUnavailableError(missing_message(missing))

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
