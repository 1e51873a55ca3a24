"""``python -m siambench.pretrain`` (e.g. under ``torchrun -m siambench.pretrain``) = ``siambench pretrain``.

Bad input (a config, data or OUTPUT_DIR error naming the file/key and the fix) ends in one
line and exit code 2 on each rank, as with ``siambench pretrain``; SIAMBENCH_DEBUG=1 shows
the traceback.
"""
import sys

from .main import main
from .utils.errors import exit_2_on_user_error

if __name__ == "__main__":
    sys.exit(exit_2_on_user_error("siambench pretrain")(main)())
