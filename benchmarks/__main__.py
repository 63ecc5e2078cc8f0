"""`python -m benchmarks`: run the benchmarks and print the results table."""

import os
import sys

# Measure the statevault of this checkout, whatever the environment has installed.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(os.path.join(_SRC, "statevault")):
    sys.path.insert(0, _SRC)

from benchmarks.run import main  # noqa: E402 - after the path is set

raise SystemExit(main())
