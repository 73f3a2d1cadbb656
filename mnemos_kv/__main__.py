"""``python -m mnemos_kv`` runs the ``mnemos-kv`` command."""

import sys

from .cli import main

sys.exit(main())
