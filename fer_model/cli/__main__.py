"""`python -m fer_model.cli`: the same as the `fer-mtl` console script."""

import sys

from fer_model.cli import main

sys.exit(main())
