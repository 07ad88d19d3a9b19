"""`python -m fer_cli`: the same as the `fer-mtl` console script."""

import sys

from fer_cli import main

sys.exit(main())
