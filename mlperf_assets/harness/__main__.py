"""``python -m mlperf_assets.harness``: SIGINT/SIGTERM handlers first, before any slow import, so a signal from here
on is never lost (``interrupts``); only Python's own start-up comes before this line."""

from .interrupts import install

install()

import sys  # noqa: E402 - after the signal handlers, on purpose

from .cli import main  # noqa: E402

sys.exit(main())
