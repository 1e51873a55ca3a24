"""``python -m pretrain`` (e.g. under ``torchrun -m pretrain``) = ``siambench pretrain``."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
