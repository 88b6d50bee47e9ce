"""``python -m medprobe ...`` is the ``medprobe`` console script (:mod:`medprobe.cli`)."""

from medprobe.cli import main

if __name__ == "__main__":
    main()
