"""Runs :mod:`medprobe.bench.precision` (the code lives in the package so `medprobe bench` can run it)."""

import sys

from medprobe.bench.precision import main

if __name__ == "__main__":
    sys.exit(main())
