"""``python -m medprobe.mcq ...`` is ``medprobe mcq ...`` (:func:`medprobe.mcq.cli.main`)."""

import sys

from medprobe.cli import main

main(["mcq", *sys.argv[1:]])
