"""Writing a secret to a file the one way lienthong does: the file is private from the moment it
exists (``0600`` at creation, whatever the umask; never written and chmod-ed after), and it
appears whole (a temporary file in the same directory, then an atomic rename)."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path``, readable and writable by its owner only; on disk before the
    rename unless ``sync`` is False (a dev PKI of thousands of keys, made again if lost: the
    fsync was half its time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
