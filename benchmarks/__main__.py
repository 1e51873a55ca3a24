import sys

from siambench.benchmarks.cli import main

sys.exit(main())
