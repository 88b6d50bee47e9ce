"""``python -m medprobe.mcq ...`` runs ``medprobe mcq ...`` (:func:`medprobe.mcq.cli.main`).

A user mistake (:class:`medprobe.errors.MedprobeError`) is one line on stderr, exit status 2.
"""

import sys

from medprobe.errors import MedprobeError
from medprobe.mcq.cli import main

try:
    status = main()
except MedprobeError as e:
    print(f"medprobe: error: {e}", file=sys.stderr, flush=True)
    status = 2
sys.exit(status)
