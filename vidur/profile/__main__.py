"""``python -m vidur.profile``: the profiler without the plugin CLI (needs torch, numpy, attrs)."""

import sys

from vidur.profile.cli import main

sys.exit(main())
