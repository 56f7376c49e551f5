"""Write a model artifact's files into a directory (being split into named steps, issue 14)."""

from modelreg.model.unpack._unpacker import *  # noqa: F403
from modelreg.model.unpack._unpacker import __all__  # noqa: F401
