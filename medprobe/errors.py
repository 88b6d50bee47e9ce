"""The exceptions that signal a user mistake (bad config, bad input files).

The entry point prints these as one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


def _user_errors() -> tuple[type[BaseException], ...]:
    from medprobe.cache import CacheError
    from medprobe.config import ConfigError
    from medprobe.data.images import ImageLoadError
    from medprobe.data.manifest import ManifestError
    from medprobe.distributed import DistributedError
    from medprobe.extractors.base import ExtractorError
    from medprobe.probe import ProbeError
    from medprobe.registry import RegistryError
    from medprobe.runner import BadImagesError

    return (
        ConfigError,
        RegistryError,
        ManifestError,
        ImageLoadError,
        BadImagesError,
        ExtractorError,
        CacheError,
        ProbeError,
        DistributedError,
    )


USER_ERRORS = _user_errors()
