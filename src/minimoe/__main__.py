"""`python -m minimoe ...` (and `accelerate launch -m minimoe ...`) run the CLI."""

import sys

from minimoe.cli import main

sys.exit(main())
