"""Entry point for stpipe: the steps this package provides.

Only strings are returned so that ``strun --list`` and the CLI stay fast:
nothing heavy is imported until a step is actually used.
"""

__all__ = ["get_steps"]


def get_steps():
    """
    Return the (class path, alias, is_pipeline) tuples of our steps and pipelines.

    Returns
    -------
    list of tuple
        One tuple per step, as expected by the ``stpipe.steps`` entry point.
    """
    return [
        ("mirispec_steps.lrs_box_extract_step.LrsBoxExtractStep", "lrs_box_extract", False),
        (
            "mirispec_steps.lrs_optimal_extract_step.LrsOptimalExtractStep",
            "lrs_optimal_extract",
            False,
        ),
        ("mirispec_steps.mrs_calibrate_step.MrsCalibrateStep", "mrs_calibrate", False),
        ("mirispec_steps.mrs_centroid_step.MrsCentroidStep", "mrs_centroid", False),
        ("mirispec_steps.mrs_extract_step.MrsExtractStep", "mrs_extract", False),
        (
            "mirispec_steps.mrs_point_source_pipeline.MrsPointSourcePipeline",
            "mrs_point_source",
            True,
        ),
        ("mirispec_steps.lrs_extract_pipeline.LrsExtractPipeline", "lrs_extract", True),
        ("mirispec_steps.jwst_pipelines.MirispecSpec2Pipeline", "mirispec_spec2", True),
        ("mirispec_steps.jwst_pipelines.MirispecSpec3Pipeline", "mirispec_spec3", True),
    ]
