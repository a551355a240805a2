"""``python -m mel2mel`` runs the command line."""

import sys

from mel2mel.cli import main

sys.exit(main())
