"""``python -m hgsmi``: the same as the ``hgsmi`` command."""
import sys

from .cli import main

sys.exit(main())
