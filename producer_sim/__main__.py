"""`python -m producer_sim`: see `producer_sim.cli`."""

import sys

from .cli import main

sys.exit(main())
