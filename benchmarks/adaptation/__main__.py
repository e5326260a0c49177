"""``python -m benchmarks.adaptation [--quick] ...``: the same as ``python -m benchmarks adaptation``, with options."""

import sys

from benchmarks.adaptation import main

if __name__ == "__main__":
    main(sys.argv[1:])
