"""Fetch a published data file into the data cache: checksum first, then into place.

Why this shape: a newcomer's first command should just work on a machine with internet, and a
half-downloaded or tampered file must never be read as data. So the file is streamed into a
temporary file beside its target (``.<name>.*.part``), its checksum is compared with the published
one, and only then is it renamed into place (fsynced, like every medprobe write); a wrong checksum,
an interrupted transfer or a network error deletes the partial file and says what to do.
``MEDPROBE_OFFLINE=1`` (``--offline``) means "never touch the network": the error then names the
file that is missing and the variable that forbade the download. Only the standard library
(urllib) is used, so downloading needs no extra dependency.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from medprobe.errors import DataError
from medprobe.io import FILE_MODE, fsync_dir, make_dirs
from medprobe.progress import console, progress_bar

OFFLINE_ENV = "MEDPROBE_OFFLINE"
#: seconds without a byte from the server before the download is given up
TIMEOUT_S = 60
_BLOCK = 1 << 20


def offline() -> bool:
    """True when ``$MEDPROBE_OFFLINE`` forbids network access (any value but empty, 0, false, no)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def download_file(url: str, target: Path, md5: str, *, show_progress: bool = True) -> Path:
    """Download ``url`` to ``target`` if its MD5 is ``md5``; returns ``target``.

    Raises :class:`DataError` (naming the file, the URL and the way out) when offline, when the
    server cannot be reached or the transfer breaks, and when the checksum differs: in every case
    nothing is left at ``target`` and the partial file is deleted."""
    target = Path(target)
    if offline():
        raise DataError(f"{target} is missing and {OFFLINE_ENV} is set, so it was not downloaded "
                        f"from {url}; unset {OFFLINE_ENV} (or drop --offline), or put the file there yourself")
    try:
        make_dirs(target.parent)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as error:
        raise DataError(f"cannot write {target}: {error.strerror}; set MEDPROBE_DATA_DIR to a writable "
                        "folder") from error
    console.print(f"downloading {url}\n  -> {target}", highlight=False)
    try:
        digest = _stream(url, fd, target.name, show_progress)
        if digest != md5.lower():
            raise DataError(f"download of {url} failed its checksum (MD5 {digest}, published {md5}); the file "
                            "was deleted. Try again later, or download it yourself and check its MD5")
        os.chmod(partial, FILE_MODE)
        os.replace(partial, target)
        fsync_dir(target.parent)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    console.print(f"downloaded {target.name} (MD5 verified)", highlight=False)
    return target


def _stream(url: str, fd: int, name: str, show_progress: bool) -> str:
    """Copy the response body into ``fd`` (fsynced, closed), with a progress bar; returns its MD5."""
    digest = hashlib.md5()
    request = urllib.request.Request(url, headers={"User-Agent": "medprobe"})
    with os.fdopen(fd, "wb") as handle:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or 0)
                with progress_bar(f"downloading {name}", total or None, enabled=show_progress,
                                  unit="bytes") as advance:
                    while block := response.read(_BLOCK):
                        handle.write(block)
                        digest.update(block)
                        advance(len(block))
                if total and handle.tell() != total:
                    raise DataError(f"download of {url} broke off after {handle.tell()} of {total} bytes; "
                                    "the partial file was deleted, try again")
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            reason = getattr(error, "reason", None) or error
            raise DataError(f"could not download {url}: {reason}. Check the internet connection (or a proxy: "
                            "$https_proxy), or download the file yourself") from error
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


__all__ = ["OFFLINE_ENV", "download_file", "offline"]
