"""Peak resident memory of the current process, for the memory benchmarks."""

from __future__ import annotations


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB (``VmHWM``).

    Not ``getrusage().ru_maxrss``: on Linux that counter survives ``exec`` and starts at the
    parent's peak, so a child started by a big parent reports the parent's memory.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("VmHWM not found in /proc/self/status")
