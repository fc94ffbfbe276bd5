"""``mirispec-batch``: a step or pipeline over many exposures, on a local or a remote dask cluster.

Examples (shell)::

    mirispec-batch mrs_point_source 'data/*_rate.fits' --out products --workers 4 \\
        --steps.mrs_extract.method=aperture
    mirispec-batch lrs_extract @inputs.txt --out products --scheduler tcp://head:8786 --resume
    mirispec-batch lrs_box_extract jw..._calints.fits --out products --chunk-integrations 250
    mirispec-batch --demo demo_batch
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirispec-batch",
        description=(
            "Run one of mirispec_steps' steps or pipelines (or any stpipe step, or a parameter "
            "file) over many inputs on dask.distributed. Step parameters use strun's syntax "
            "(--name=value, --steps.<step>.<name>=value) and go after the inputs."
        ),
        epilog="A manifest (ECSV and JSON) of every input's outcome goes to the output folder.",
    )
    parser.add_argument("step", nargs="?", help="step/pipeline alias, class, or parameter file "
                        "(a path, or a name listed by mirispec-pars)")  # fmt: skip
    parser.add_argument("inputs", nargs="*", help="files, glob patterns, association JSON files, "
                        "or list files (.txt/.lst, or @file)")  # fmt: skip
    parser.add_argument("--out", default=".", help="output folder (default: current folder)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="process workers of the local cluster (default: one per core)",
    )
    parser.add_argument(
        "--threads-per-worker", type=int, default=1, help="threads per local worker (default 1)"
    )
    parser.add_argument(
        "--scheduler", default=None, help="address of an existing dask scheduler (no local cluster)"
    )
    parser.add_argument("--resume", action="store_true",
                        help="skip inputs an earlier batch in --out finished with the same "
                        "parameters and package version")  # fmt: skip
    parser.add_argument("--chunk-integrations", type=int, default=None,
                        help="split time series longer than this into chunks run in parallel, "
                        "stitched into one x1dints")  # fmt: skip
    parser.add_argument(
        "--no-resolve",
        action="store_true",
        help="let each task resolve its reference files (default: once, here)",
    )
    parser.add_argument(
        "--demo",
        metavar="FOLDER",
        default=None,
        help="simulate demo exposures in FOLDER and run two batches on them",
    )
    return parser


def main(argv=None) -> int:
    """
    Run ``mirispec-batch``.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every input ended done, skipped or resumed; 1 when one failed;
        2 when the batch could not start.
    """
    from mirispec_steps.errors import MirispecError

    parser = _parser()
    args, step_parameters = parser.parse_known_args(argv)
    unknown = [p for p in step_parameters if not p.startswith("--")]
    if unknown:
        parser.error(f"unexpected arguments {unknown}: step parameters look like --name=value")
    _log_to_terminal()
    os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    if args.demo is not None:
        from mirispec_steps.batch.demo import run_demo

        return run_demo(Path(args.demo), workers=args.workers)
    if not args.step or not args.inputs:
        parser.error("give a step and at least one input (or --demo FOLDER)")
    from mirispec_steps.batch.manifest import summary_line
    from mirispec_steps.batch.runner import run_batch

    try:
        manifest = run_batch(
            args.inputs,
            args.step,
            step_parameters,
            output_dir=args.out,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            scheduler=args.scheduler,
            resume=args.resume,
            chunk_integrations=args.chunk_integrations,
            resolve_references=not args.no_resolve,
        )
    except MirispecError as exc:
        print(f"mirispec-batch: {exc}", file=sys.stderr)
        return 2
    print(summary_line(manifest))
    return 1 if manifest.counts()["failed"] else 0


def _log_to_terminal() -> None:
    """The batch's own lines (not the tasks', which go to their log files) on standard error."""
    logger = logging.getLogger("mirispec_steps.batch")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
