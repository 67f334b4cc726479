"""The data directory, made safe before anything is written in it.

It holds every message and, until schema 4, held resume tokens: so it is the server user's
alone. The directory is created 0700 and every file in it is 0600 whatever the umask; a
directory owned by another user, or writable by group or others, is refused (anyone who can
write there can swap a file for a symlink to one of ours); and files are opened with
O_NOFOLLOW, so a symlink planted in it is refused instead of followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chatctl.store.errors import StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600


def prepare(directory: Path) -> None:
    """Create `directory` (0700) or check an existing one; tighten what it holds to 0600.
    Raises StoreError with one line naming the problem."""
    where = str(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        info = os.stat(directory)
    except OSError as exc:
        raise StoreError(f"cannot use data directory {where}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(f"data directory {where} is not a directory")
    if info.st_uid != os.geteuid():
        raise StoreError(
            f"data directory {where} belongs to another user (uid {info.st_uid}); "
            "it must be this user's own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreError(
            f"data directory {where} is writable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o}); chmod 700 it"
        )
    try:
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            os.chmod(directory, DIR_MODE)  # readable by others: ours, so make it private
        with os.scandir(directory) as entries:
            listed = list(entries)
        for entry in listed:
            if entry.is_symlink():
                raise StoreError(
                    f"{entry.path} is a symbolic link; the data directory holds no links"
                )
            if entry.is_file(follow_symlinks=False):
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if mode & 0o077:
                    os.chmod(entry.path, mode & 0o700, follow_symlinks=False)
    except OSError as exc:
        raise StoreError(f"cannot use data directory {where}: {exc.strerror or exc}") from None


def open_file(path: Path, flags: int) -> int:
    """os.open for a file of the data directory: 0600, never through a symlink."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise StoreError(
                f"{path} is a symbolic link; the data directory holds no links"
            ) from None
        raise StoreError(f"cannot use {path}: {exc.strerror or exc}") from None


def sync_directory(directory: Path) -> None:
    """fsync `directory`: a rename in it is on disk before what follows."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot use data directory {directory}: {exc.strerror or exc}") from None
