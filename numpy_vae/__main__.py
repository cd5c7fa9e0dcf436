"""``python -m numpy_vae``: the same as the ``numpy-vae`` command."""

import sys

from .cli import main

sys.exit(main())
