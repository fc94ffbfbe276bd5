"""Entry point for stpipe: the steps this package provides.

Only strings are returned so that ``strun --list`` and the CLI stay fast:
nothing heavy is imported until a step is actually used. Class paths are the
stable top-level names (``mirispec_steps.LrsBoxExtractStep``).
"""

__all__ = ["get_steps"]

#: (class name, strun alias, is a pipeline)
STEPS = (
    ("LrsBoxExtractStep", "lrs_box_extract", False),
    ("LrsOptimalExtractStep", "lrs_optimal_extract", False),
    ("LrsPsfStep", "lrs_psf", False),
    ("MrsCalibrateStep", "mrs_calibrate", False),
    ("MrsCentroidStep", "mrs_centroid", False),
    ("MrsExtractStep", "mrs_extract", False),
    ("MrsPsfStep", "mrs_psf", False),
    ("MrsCombineStep", "mrs_combine", False),
    ("MrsPointSourcePipeline", "mrs_point_source", True),
    ("LrsExtractPipeline", "lrs_extract", True),
    ("MirispecSpec2Pipeline", "mirispec_spec2", True),
    ("MirispecSpec3Pipeline", "mirispec_spec3", True),
)


def get_steps():
    """
    Return the (class path, alias, is_pipeline) tuples of our steps and pipelines.

    Returns
    -------
    list of tuple
        One tuple per step, as expected by the ``stpipe.steps`` entry point.
    """
    return [(f"mirispec_steps.{name}", alias, is_pipeline) for name, alias, is_pipeline in STEPS]
