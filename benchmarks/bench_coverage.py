"""Runs :mod:`medprobe.bench.coverage` (the code lives in the package so tests can import it)."""

import sys

from medprobe.bench.coverage import main

if __name__ == "__main__":
    sys.exit(main())
