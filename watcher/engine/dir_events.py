"""Whether anything changed in some directories, from Linux's inotify: nearly free to ask.

Stat'ing a thousand rule files every two seconds was about a sixth of an idle daemon's CPU. The
kernel tells instead: a file in a watched directory written, its attributes changed, an entry
created, removed or renamed (a ConfigMap's `..data` link swapped is one). Where inotify is not to
be had (not Linux, no more watches, a filesystem that does not report, such as NFS for changes
made elsewhere), `pending` always says yes and the caller stats as before; the caller also stats
now and then whatever inotify says, so a change it cannot report is seen late, never missed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Sequence

# inotify(7): what counts as a change in a watched directory.
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_MASK = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
    | _IN_DELETE_SELF | _IN_MOVE_SELF
)  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


class DirectoryEvents:
    def __init__(self, directories: Sequence[str]) -> None:
        self._fd: int | None = None
        libc = _libc() if directories else None  # nothing to watch: nothing can be vouched for
        if libc is None or not hasattr(libc, "inotify_init1"):
            return
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            return
        for directory in directories:
            if int(libc.inotify_add_watch(fd, os.fsencode(directory), _MASK)) < 0:
                os.close(fd)  # one directory unwatched would be a change unseen: poll instead
                return
        self._fd = fd

    @property
    def watching(self) -> bool:
        return self._fd is not None

    def pending(self) -> bool:
        """Whether something changed since the last call (always True when not watching)."""
        if self._fd is None:
            return True
        seen = False
        while True:
            try:
                seen = bool(os.read(self._fd, 65536)) or seen
            except BlockingIOError:
                return seen
            except OSError:
                self.close()
                return True

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
