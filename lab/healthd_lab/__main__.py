"""python3 -m healthd_lab (with lab/ on sys.path): the healthd-lab CLI."""
import sys

from .cli import main

sys.exit(main())
