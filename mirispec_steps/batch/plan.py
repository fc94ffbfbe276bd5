"""What a batch will run: the step, its parameters, references resolved once, one task per input.

Everything here runs on the client, before any task is sent: parameters are
parsed with strun's own parser (a mistake stops the batch before it starts),
reference files are looked up once per distinct instrument set-up and handed
to the tasks as overrides, and every input gets its product root, log file
and parameters' hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirispec_steps.batch.inputs import is_association
from mirispec_steps.errors import CrdsUnavailableError, InputDataError, ParameterError

__all__ = [
    "FORWARDED_ENVIRONMENT",
    "BatchTask",
    "StepConfiguration",
    "build_step",
    "configure_step",
    "plan_tasks",
    "product_root",
    "reference_overrides",
    "resolve_identifier",
]

#: Environment variables the workers get from the client (CRDS and stpipe settings).
FORWARDED_ENVIRONMENT = ("CRDS_", "STPIPE_", "MIRISPEC_")

#: Header keywords that select reference files (an input set-up shares its references).
REFERENCE_KEYWORDS = (
    "TELESCOP", "INSTRUME", "DETECTOR", "EXP_TYPE", "FILTER", "BAND", "CHANNEL",
    "SUBARRAY", "READPATT", "TSOVISIT", "DATE-OBS",
)  # fmt: skip

#: Parameters that a batch sets itself.
BATCH_OWNED = ("output_dir", "output_file", "input_dir")


def resolve_identifier(step: str) -> str:
    """
    What strun gets for ``step``: a packaged parameter file's path, or ``step`` itself.

    Parameters
    ----------
    step : str
        A step or pipeline alias (``mrs_point_source``), a class path, a
        parameter file path, or the name of a packaged parameter file
        (``mirispec-pars`` lists them).

    Returns
    -------
    str
        The identifier for stpipe.
    """
    from mirispec_steps.parameter_files import parameter_file, parameter_file_names

    if not os.path.exists(step) and step.removesuffix(".asdf") in parameter_file_names():
        return parameter_file(step)
    return step


def build_step(argv: Sequence[str]):
    """
    A step configured exactly as ``strun <argv>`` would, without running it.

    Parameters
    ----------
    argv : sequence of str
        strun's arguments: the step identifier, the input, ``--name=value``.

    Returns
    -------
    tuple
        ``(step, positional)``: the configured step (``save_results`` on, the
        input as primary input) and the positional arguments to run it on.

    Raises
    ------
    ParameterError
        A parameter strun would refuse, with strun's message.
    CrdsUnavailableError
        stpipe asked CRDS for step parameters and CRDS could not answer.
    """
    # stpipe's command-line machinery has no public "configure without running";
    # these two private functions are what strun itself calls, so the batch
    # accepts exactly strun's syntax.
    from stpipe import _cmdline

    from mirispec_steps.crds_guard import call_guarded, is_crds_failure

    argv = [str(argument) for argument in argv]
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(messages):
            step_class, config, name, config_file, parser, known = (
                _cmdline._config_and_class_from_cmdline(argv)
            )
            return call_guarded(
                _cmdline._build_step_from_args,
                step_class, config, name, config_file, parser, known, argv,
            )  # fmt: skip
    except SystemExit as exc:
        text = messages.getvalue().strip()
        if exc.code == 2 or "usage:" in text:
            lines = [line for line in text.splitlines() if line.strip()]
            raise ParameterError(
                f"strun would refuse these arguments: {lines[-1] if lines else exc}"
            ) from None
        raise CrdsUnavailableError(f"CRDS cannot be reached: {text or exc}") from None
    except BaseException as exc:
        if is_crds_failure(exc):
            raise CrdsUnavailableError(f"CRDS cannot be reached: {exc}") from None
        if isinstance(exc, ValueError) and not isinstance(exc, InputDataError):
            raise ParameterError(f"{argv[0]}: {exc}") from None
        raise


@dataclass(frozen=True)
class StepConfiguration:
    """
    The step of a batch, checked on the client.

    Attributes
    ----------
    identifier : str
        What strun gets (alias, class path or parameter file path).
    parameters : tuple of str
        strun-style arguments (``--steps.mrs_extract.method=aperture``).
    class_name : str
        The step's class, e.g. ``MrsPointSourcePipeline``.
    parameters_hash : str
        sha256 (16 hex digits) of every resolved parameter of the step (its
        defaults included), the batch's own ones excepted.
    pars : dict
        The resolved parameters (for the manifest).
    """

    identifier: str
    parameters: tuple[str, ...]
    class_name: str
    parameters_hash: str
    pars: dict = field(repr=False, compare=False)


def configure_step(step: str, parameters: Sequence[str] = ()) -> tuple[StepConfiguration, object]:
    """
    Check the step and its parameters as strun would, before any task runs.

    Parameters
    ----------
    step : str
        See :func:`resolve_identifier`.
    parameters : sequence of str
        strun-style arguments; ``--output_dir``, ``--output_file`` and
        ``--input_dir`` belong to the batch and are refused.

    Returns
    -------
    tuple
        ``(StepConfiguration, step instance)``.

    Raises
    ------
    ParameterError
        An unknown step, a parameter strun refuses, or one the batch owns.
    """
    parameters = tuple(str(p) for p in parameters)
    for parameter in parameters:
        name = parameter.lstrip("-").split("=", 1)[0].replace("-", "_")
        if name.rsplit(".", 1)[-1] in BATCH_OWNED:
            raise ParameterError(
                f"{parameter}: the batch sets where products go (use the batch's output folder)"
            )
    identifier = resolve_identifier(step)
    try:
        instance, _ = build_step([identifier, *parameters])
    except ParameterError:
        raise
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    pars = _without_batch_owned(instance.get_pars())
    text = json.dumps(
        {"class": f"{type(instance).__module__}.{type(instance).__name__}", "pars": pars},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    configuration = StepConfiguration(
        identifier, parameters, type(instance).__name__, digest, json.loads(text)["pars"]
    )
    return configuration, instance


def _without_batch_owned(pars: dict) -> dict:
    cleaned = {}
    for key, value in pars.items():
        if key in BATCH_OWNED:
            continue
        cleaned[key] = _without_batch_owned(value) if isinstance(value, dict) else value
    return cleaned


def product_root(path: Path) -> str:
    """
    The name stem a step gives its products for this input (``<root>_x1d.fits``).

    Parameters
    ----------
    path : Path
        An input file.

    Returns
    -------
    str
        The stem without its product suffix (``_rate``, ``_cal``...); for an
        association, its stem.
    """
    from mirispec_steps.stepbase import strip_suffix

    if is_association(path):
        return path.stem
    return strip_suffix(path.name.split(".", 1)[0])[0]


def reference_overrides(step, model) -> list[str]:
    """
    The references of the package's steps inside ``step``, looked up once, as override arguments.

    jwst's own steps inside a pipeline resolve theirs when they run (from
    the CRDS cache the workers share); a reference that cannot be had is
    left out, for the run to report with its override flag.

    Parameters
    ----------
    step : Step
        The configured step or pipeline (from :func:`configure_step`).
    model : DataModel
        The input (or the first member of an association).

    Returns
    -------
    list of str
        ``--[steps.<name>.]override_<reftype>=<path>`` arguments.
    """
    arguments = []
    for prefix, substep in _package_steps(step, ""):
        for reftype, path in substep.available_references(model).items():
            arguments.append(f"--{prefix}override_{reftype}={path}")
    return arguments


def _package_steps(step, prefix):
    from stpipe import Pipeline

    from mirispec_steps.stepbase import MirispecStep

    if isinstance(step, MirispecStep):
        yield prefix, step
        return
    if isinstance(step, Pipeline) and prefix == "":
        # One level of substeps: stpipe's command line reaches no deeper.
        for name in step.step_defs:
            substep = getattr(step, name, None)
            if substep is not None and not substep.skip:
                yield from _package_steps(substep, f"steps.{name}.")


@dataclass(frozen=True)
class BatchTask:
    """
    One unit of work: a step run on one input (or on a range of its integrations).

    Attributes
    ----------
    number : int
        Position in the batch (1-based).
    input : str
        The input file.
    argv : tuple of str
        strun's arguments (identifier, input, parameters, reference overrides).
    output_dir : str
        Where products go.
    log_path : str
        The task's log file, next to its products.
    parameters_hash : str
        The step's parameters' hash and this input's reference overrides.
    environment : tuple of (str, str)
        CRDS and stpipe settings for the worker.
    integrations : tuple of int or None
        ``(start, stop)`` integrations (0-based, stop excluded) of a chunk of
        a time series, or None for the whole input.
    """

    number: int
    input: str
    argv: tuple[str, ...]
    output_dir: str
    log_path: str
    parameters_hash: str
    environment: tuple[tuple[str, str], ...] = ()
    integrations: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        """A name unique in the batch, for the scheduler and the staging folder."""
        chunk = "" if self.integrations is None else f"-ints{self.integrations[0]}"
        return f"mirispec-{self.number:05d}{chunk}"


def forwarded_environment() -> tuple[tuple[str, str], ...]:
    """The client's CRDS, stpipe and mirispec settings (sorted), for the workers."""
    return tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(FORWARDED_ENVIRONMENT))
    )


def reference_key(path: Path) -> tuple:
    """
    Inputs with the same key get the same reference files (header keywords CRDS selects on).

    Parameters
    ----------
    path : Path
        An input.

    Returns
    -------
    tuple
        The key (the path itself for anything but a FITS file).
    """
    if path.suffix.lower() not in (".fits", ".fit"):
        return (str(path),)
    from astropy.io import fits

    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError):
        return (str(path),)  # the task will say what is wrong with it
    return tuple(str(header.get(keyword, "")) for keyword in REFERENCE_KEYWORDS)


def plan_tasks(
    inputs: Sequence[Path],
    configuration: StepConfiguration,
    step,
    output_dir: Path,
    resolve_references: bool = True,
) -> list[BatchTask]:
    """
    One task per input, with its references resolved on the client.

    Parameters
    ----------
    inputs : sequence of Path
        From :func:`~mirispec_steps.batch.inputs.expand_inputs`.
    configuration : StepConfiguration
        From :func:`configure_step`.
    step : Step
        The configured step (to look up references).
    output_dir : Path
        Where products and logs go.
    resolve_references : bool
        Look references up here (False: each task resolves its own).

    Returns
    -------
    list of BatchTask
        In the order of ``inputs``.

    Raises
    ------
    InputDataError
        Two inputs would write products of the same name.
    """
    roots: dict[str, Path] = {}
    for path in inputs:
        root = product_root(path)
        if root in roots:
            raise InputDataError(
                f"{roots[root].name} and {path.name} would write products of the same name "
                f"({root}_...): give them separate batches or output folders"
            )
        roots[root] = path
    environment = forwarded_environment()
    overrides_by_key: dict[tuple, list[str]] = {}
    tasks = []
    for number, path in enumerate(inputs, start=1):
        overrides: list[str] = []
        if resolve_references:
            key = reference_key(path)
            if key not in overrides_by_key:
                overrides_by_key[key] = _overrides_for(step, path)
            overrides = overrides_by_key[key]
        digest = hashlib.sha256(
            "\n".join([configuration.parameters_hash, *overrides]).encode()
        ).hexdigest()[:16]
        root = product_root(path)
        tasks.append(
            BatchTask(
                number=number,
                input=str(path),
                argv=(configuration.identifier, str(path), *configuration.parameters, *overrides),
                output_dir=str(output_dir),
                log_path=str(output_dir / f"{root}.log"),
                parameters_hash=digest,
                environment=environment,
            )
        )
    return tasks


def _overrides_for(step, path: Path) -> list[str]:
    """Reference overrides for one input; nothing when it cannot be opened (its task says why)."""
    from jwst import datamodels

    try:
        with datamodels.open(str(path)) as model:
            if isinstance(model, datamodels.ModelContainer):
                if not len(model):
                    return []
                return reference_overrides(step, model[0])
            return reference_overrides(step, model)
    except (CrdsUnavailableError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # Unreadable or incomplete input: its task resolves (and reports) on its own.
        logging.getLogger("mirispec_steps.batch").debug(
            f"references of {path.name} not resolved here: {exc}"
        )
        return []
