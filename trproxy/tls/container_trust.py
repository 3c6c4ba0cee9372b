"""trproxy's CA in a running container's trust store (``trproxy attach --install-ca``).

A container that trproxy did not start cannot get the CA by a mount or by its
environment: the CA is written into its file system instead, through
``/proc/<pid>/root`` of one of its processes. Our certificate goes to
``/etc/trproxy/trproxy-ca-cert.pem`` and is appended, between two marker lines, to each
system bundle the image has (Debian/Ubuntu/Alpine, RHEL/Fedora, openSUSE layouts), which
curl, OpenSSL, Python's ``ssl`` and Go read when they make a TLS context. ``remove``
takes the marked block out again and deletes the file it wrote.

Paths are resolved inside the container's root: a symbolic link there (absolute ones
included) is followed within that root, never into the host's file system, and the last
component is opened with O_NOFOLLOW.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

CA_DIR = "/etc/trproxy"
CERT_NAME = "trproxy-ca-cert.pem"
BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
           "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/ca-bundle.pem",
           "/etc/ssl/cert.pem")
BEGIN = b"# --- trproxy CA (trproxy attach --install-ca) ---\n"
END = b"# --- end of trproxy CA ---\n"
MAX_LINKS = 40


class TrustError(OSError):
    """The container's file system cannot take the CA (read-only, gone...)."""


def resolve_inside(root: Path, path: str) -> Path:
    """``path`` as the container sees it, under ``root``, its links followed inside."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        if here.is_symlink():
            links += 1
            if links > MAX_LINKS:
                raise TrustError(f"too many symbolic links in {path}")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _without_block(data: bytes) -> bytes:
    start = data.find(BEGIN)
    end = data.find(END, start)
    if start < 0 or end < 0:
        return data
    return data[:start] + data[end + len(END):]


@dataclass
class Installed:
    """What ``install`` changed in one container (paths as the container sees them)."""

    cert: str = ""
    bundles: list[str] = field(default_factory=list)


def root_of(pid: int) -> Path:
    """The file system a process sees (its container's)."""
    return Path(f"/proc/{pid}/root")


def install(root: Path, cert_pem: bytes) -> Installed:
    """Write the CA into the file system under ``root`` (``root_of``); what was changed."""
    done = Installed()
    try:
        for bundle in BUNDLES:
            target = resolve_inside(root, bundle)
            if not target.is_file():
                continue
            inside = "/" + str(target.relative_to(root))
            if inside in done.bundles:  # two names of one file
                continue
            data = _without_block(_read(target))
            if data and not data.endswith(b"\n"):
                data += b"\n"
            _write(target, data + BEGIN + cert_pem.rstrip(b"\n") + b"\n" + END)
            done.bundles.append(inside)
        ca_dir = resolve_inside(root, CA_DIR)
        ca_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        _write(ca_dir / CERT_NAME, cert_pem)
        done.cert = f"{CA_DIR}/{CERT_NAME}"
    except OSError as e:
        raise TrustError(f"cannot write trproxy's CA into {root}: {e}") from e
    return done


def remove(root: Path, installed: Installed) -> None:
    """Undo ``install`` (in the same container, maybe restarted since)."""
    try:
        for bundle in installed.bundles:
            target = resolve_inside(root, bundle)
            data = _read(target)
            if BEGIN in data:
                _write(target, _without_block(data))
        if installed.cert:
            with contextlib.suppress(FileNotFoundError):
                resolve_inside(root, installed.cert).unlink()
    except OSError as e:
        raise TrustError(f"cannot remove trproxy's CA from {root}: {e}") from e


def advice(installed: Installed) -> str:
    """Who trusts the CA now, and what the others need (they cannot be changed from outside)."""
    bundle = installed.bundles[0] if installed.bundles else f"{CA_DIR}/{CERT_NAME}"
    where = ", ".join(installed.bundles) if installed.bundles else "no system bundle found"
    return (f"trproxy's CA installed in the container ({where}; alone in {installed.cert}): "
            "curl, OpenSSL, Python's ssl and Go trust it for contexts they make from now on; "
            "processes that loaded their trust store already, and clients with a bundle of "
            f"their own, need a restart with SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle} "
            f"(requests, certifi) NODE_EXTRA_CA_CERTS={installed.cert} (Node); JVMs need it in "
            "their keystore")
