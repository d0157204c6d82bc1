"""`python -m podq ...`: the podq command (as `python -m saq` is SAQ's)."""

import sys

from podq.cli import main

sys.exit(main())
