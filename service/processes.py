"""Which process is which: names that stay true across pid reuse, and whether one runs.

A lease, a job or a scratch file records the process that owns it; another process on
the same data directory asks here whether that owner still runs.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (True when it cannot tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def machine() -> str:
    """This host and pid namespace: the scope in which a process id names one process."""
    try:
        namespace = str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def start_time(pid: int) -> str | None:
    """When process ``pid`` started, None when no live process has that id.

    From ``/proc/<pid>/stat`` (clock ticks since boot), so a recycled pid does not pass
    for the process that died; "" where there is no ``/proc`` to ask.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return "" if pid_alive(pid) else None
    except OSError:
        return ""
    # The fields after the command name, which may itself hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # dead, only not reaped yet
        return None
    return fields[19]


def this_process() -> str:
    pid = os.getpid()
    return f"{machine()}|{pid}|{start_time(pid) or ''}"


def process_alive(process: str) -> bool:
    """Whether the process a lease names may still run; True when this host cannot tell."""
    try:
        scope, pid, started = process.split("|")
    except ValueError:
        return True  # a lease from before leases named their process: only expiry frees it
    if scope != machine():
        return True
    now = start_time(int(pid))
    return now is not None and (now == started or not started or not now)
