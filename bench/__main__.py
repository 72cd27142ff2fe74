"""`python -m bench` (`make bench`): see bench/run.py."""

import sys

from bench.run import main

# The guard matters: the seeder's worker processes re-import this module.
if __name__ == "__main__":
    sys.exit(main())
