"""``python -m bench``: run the benchmark suite (see :func:`bench.main`)."""

import sys

from bench import main

sys.exit(main(sys.argv[1:]))
