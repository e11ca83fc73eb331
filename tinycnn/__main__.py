"""`python -m tinycnn ...`: the same as the `tinycnn` console script."""

import sys

from tinycnn.cli import main

sys.exit(main())
