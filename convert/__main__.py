"""``python -m siambench.convert IN OUT.pkl`` == ``siambench convert IN OUT.pkl``."""
import sys

from .cli import main

sys.exit(main())
