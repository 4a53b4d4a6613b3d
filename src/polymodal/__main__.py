"""``python -m polymodal`` (and ``torchrun -m polymodal``) runs the CLI."""

import sys

from polymodal.cli.main import main

sys.exit(main())
