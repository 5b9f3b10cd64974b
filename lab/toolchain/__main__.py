"""`python -m lab.toolchain [build|key|bin-dir]`: the same commands as build.sh."""

import subprocess
import sys

from lab.toolchain import BUILD_SCRIPT

if __name__ == "__main__":
    sys.exit(subprocess.call(["bash", str(BUILD_SCRIPT), *sys.argv[1:]]))
