"""`python -m bench`: the program's recovery, copy and no-op figures measured in the lab, with the
baselines they are compared with measured side by side in the same run (issue 7).

The bench runs on lab instance 1 (hosts `srl1-*`, 198.18.1.0/24, state `.lab1/`) unless
SEALER_LAB_INSTANCE says otherwise, so it can run beside `make test` on instance 0. The variable is
set here, before anything imports `lab` (which reads it at import time).
"""

import os

os.environ.setdefault("SEALER_LAB_INSTANCE", "1")
