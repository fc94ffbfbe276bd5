"""Time series in pieces: integration chunks of a calints run in parallel, stitched into one x1d.

A chunk is the exposure with only some integrations, its
``meta.exposure.integration_start/end`` moved accordingly (as jwst's segment
files have them), so the x1dints rows of the chunk carry the right
``INT_NUM`` and times from the full ``INT_TIMES`` table. Stitching
concatenates the spectra rows in integration order; a step whose
integrations are extracted independently gives exactly the serial run's
spectra (tested to the byte).

Steps that fit quantities to all integrations together (the optimal
extraction's trace, profile and weights) would give different spectra per
chunk: :func:`chunking_refusal` says so and the batch runs them whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["chunk_ranges", "chunking_refusal", "count_integrations", "integration_chunk",
           "stitch_x1dints"]  # fmt: skip

#: Per-integration arrays of a calints (first axis: integration).
INTEGRATION_ARRAYS = ("data", "dq", "err", "var_poisson", "var_rnoise", "var_flat")


def chunk_ranges(n_integrations: int, chunk_size: int) -> list[tuple[int, int]]:
    """
    ``(start, stop)`` integration ranges of at most ``chunk_size`` (balanced).

    Parameters
    ----------
    n_integrations : int
        Integrations in the input.
    chunk_size : int
        Largest chunk.

    Returns
    -------
    list of tuple of int
        Ranges covering ``0..n_integrations`` in order.

    Examples
    --------
    >>> chunk_ranges(10, 4)
    [(0, 4), (4, 7), (7, 10)]
    """
    n_chunks = max(1, -(-n_integrations // max(1, chunk_size)))
    edges = [-(-index * n_integrations // n_chunks) for index in range(n_chunks + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def count_integrations(path: str | Path) -> int:
    """
    Integrations in a calints file (1 for anything else).

    Parameters
    ----------
    path : str or Path
        An input file.

    Returns
    -------
    int
        Length of the SCI cube's integration axis.
    """
    from astropy.io import fits

    try:
        header = fits.getheader(path, "SCI")
    except (OSError, KeyError, IndexError, ValueError):
        return 1
    return int(header.get("NAXIS3", 1)) if header.get("NAXIS", 0) == 3 else 1


def chunking_refusal(step) -> str | None:
    """
    Why ``step``'s integrations cannot be split into chunks, or None when they can.

    Parameters
    ----------
    step : Step
        The configured step or pipeline.

    Returns
    -------
    str or None
        The reason.
    """
    from mirispec_steps.lrs.box_step import LrsBoxExtractStep
    from mirispec_steps.lrs.pipeline import LrsExtractPipeline

    if isinstance(step, LrsBoxExtractStep):
        return None
    if isinstance(step, LrsExtractPipeline) and step.lrs_optimal_extract.skip:
        return None
    if isinstance(step, LrsExtractPipeline):
        return (
            "lrs_optimal_extract fits the trace, profile and weights to all integrations "
            "together: chunks would change the spectra (skip it with "
            "--steps.lrs_optimal_extract.skip=true, or run without chunks)"
        )
    return (
        f"{type(step).__name__} is not a time-series extraction with independent integrations "
        "(chunks are for lrs_box_extract and lrs_extract with box only)"
    )


def integration_chunk(path: str, start: int, stop: int):
    """
    A calints with integrations ``start:stop`` only (0-based, stop excluded).

    Parameters
    ----------
    path : str
        The calints file (opened here, never written).
    start, stop : int
        The range.

    Returns
    -------
    CubeModel
        The chunk; its ``integration_start/end`` count from the file's.
    """
    from stdatamodels.jwst import datamodels

    model = datamodels.open(path)
    n_int = model.data.shape[0]
    if not 0 <= start < stop <= n_int:
        raise ValueError(f"integrations {start}:{stop} outside 0:{n_int} of {path}")
    for name in INTEGRATION_ARRAYS:
        array = getattr(model, name, None)
        if array is not None and array.ndim == 3 and array.shape[0] == n_int:
            setattr(model, name, array[start:stop].copy())
    exposure = model.meta.exposure
    first = exposure.integration_start or 1
    exposure.integration_start = first + start
    exposure.integration_end = first + stop - 1
    return model


def stitch_x1dints(chunk_paths: list[str], output_path: str, integration_range: tuple[int, int]):
    """
    One x1dints from the chunks' x1dints, rows in integration order.

    Parameters
    ----------
    chunk_paths : list of str
        The chunks' products, in integration order.
    output_path : str
        Where the stitched product goes.
    integration_range : tuple of int
        The whole input's ``integration_start, integration_end``.

    Returns
    -------
    str
        ``output_path``.
    """
    from stdatamodels.jwst import datamodels

    models = [datamodels.open(path) for path in chunk_paths]
    try:
        stitched = models[0].copy()
        for index, spectrum in enumerate(stitched.spec):
            tables = [model.spec[index].spec_table for model in models]
            spectrum.spec_table = np.concatenate([np.asarray(t) for t in tables])
            for name in spectrum.spec_table.dtype.names:
                unit = models[0].spec[index].spec_table.columns[name].unit
                if unit is not None:
                    spectrum.spec_table.columns[name].unit = unit
        stitched.meta.exposure.integration_start = integration_range[0]
        stitched.meta.exposure.integration_end = integration_range[1]
        stitched.meta.filename = Path(output_path).name
        stitched.save(output_path)
    finally:
        for model in models:
            model.close()
    return output_path
