"""One exception family for everything the package refuses to do.

Every error raised on purpose by ``mirispec_steps`` derives from
:class:`MirispecError`, so callers (and pipelines that embed our steps) can
catch the whole family in one ``except`` clause. The subclasses also derive
from the matching built-in exception, so code written against jwst's habits
(``except ValueError``) keeps working.
"""

__all__ = [
    "MirispecError",
    "InputDataError",
    "ParameterError",
    "ReferenceFileError",
    "CrdsUnavailableError",
]


class MirispecError(Exception):
    """Base class of all errors raised by mirispec_steps."""


class InputDataError(MirispecError, ValueError):
    """The input exposure cannot be processed (wrong type, no WCS, no valid data...)."""


class ParameterError(MirispecError, ValueError):
    """A step parameter or a parameter from a reference file makes no sense."""


class ReferenceFileError(MirispecError, ValueError):
    """A reference file is malformed; the message names the file and the key."""


class CrdsUnavailableError(MirispecError, RuntimeError):
    """CRDS could not provide a reference file and no override was given."""
