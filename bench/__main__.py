import sys

import bench  # noqa: F401  (sets SEALER_LAB_INSTANCE before `lab` is imported)
from bench.run import main

sys.exit(main())
