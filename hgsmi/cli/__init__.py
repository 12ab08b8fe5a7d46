"""The ``hgsmi`` command and what only it uses.

:mod:`.commands` parses the command line and runs a subcommand (the console
script is ``hgsmi.cli:main``; ``python -m hgsmi`` is the same); :mod:`.stat`
(``hgsmi stat``), :mod:`.running` (``hgsmi list``), :mod:`.demo` and
:mod:`.progress` (progress lines, sizes, rates) serve it.
"""
from .commands import main

__all__ = ["main"]
