"""``python -m medprobe [overrides]``: the Hydra entry point; all work happens in ``run(cfg)``."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from medprobe.config import conf_dir, register_configs

register_configs()
log = logging.getLogger("medprobe")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    from medprobe.errors import USER_ERRORS
    from medprobe.runner import run

    try:
        run(cfg)
    except USER_ERRORS as e:  # a user mistake: one clear message, no traceback
        print(f"medprobe: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "medprobe: interrupted; finished extraction batches are kept in the cache, "
            "rerun the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
