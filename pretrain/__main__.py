"""``python -m siambench.pretrain`` (e.g. under ``torchrun -m siambench.pretrain``) = ``siambench pretrain``.

Bad input (a config, data or OUTPUT_DIR error naming the file/key and the fix) ends in one
line and exit code 2 on each rank, as with ``siambench pretrain``; SIAMBENCH_DEBUG=1 shows
the traceback.
"""
import os
import sys

from .data.folder import CorruptDataError
from .main import main
from .utils.config import ConfigError

if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, CorruptDataError) as e:
        if os.environ.get("SIAMBENCH_DEBUG"):
            raise
        print(f"siambench pretrain: error: {e}", file=sys.stderr)
        sys.exit(2)
