"""eBPF side of the redirect: the C program (redirect.bpf.c, redirect.h) and its loader.

``loader.load()`` gives the programs and maps (compiled with bcc once, then pinned under
bpffs); ``trproxy.redirect`` builds runs on top of it. Nothing here knows about cgroup
paths or processes.
"""

from trproxy.bpf.loader import (
    BccMissingError,
    BpfError,
    KernelHeadersMissingError,
    Maps,
    Programs,
    load,
)

__all__ = ["BccMissingError", "BpfError", "KernelHeadersMissingError", "Maps", "Programs", "load"]
