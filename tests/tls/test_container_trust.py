"""Writing trproxy's CA into a container's file system (``attach --install-ca``): the
container's links are followed inside its root, never into the host's files, and
``remove`` leaves the bundles byte for byte as they were."""

from __future__ import annotations

import os
from pathlib import Path

from trproxy.tls import container_trust as trust

CERT = b"-----BEGIN CERTIFICATE-----\nTRPROXY\n-----END CERTIFICATE-----\n"


def _image(root: Path) -> bytes:
    """A Debian-like trust store, with Alpine's /etc/ssl/cert.pem as an absolute link."""
    certs = root / "etc" / "ssl" / "certs"
    certs.mkdir(parents=True)
    original = b"-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----"  # no final newline
    (certs / "ca-certificates.crt").write_bytes(original)
    os.symlink("/etc/ssl/certs/ca-certificates.crt", root / "etc" / "ssl" / "cert.pem")
    return original


def test_install_appends_to_each_bundle_once_and_remove_restores_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    original = _image(root)
    installed = trust.install(root, CERT)
    assert installed.bundles == ["/etc/ssl/certs/ca-certificates.crt"]  # the link is the same file
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    assert bundle.startswith(original + b"\n") and bundle.count(b"TRPROXY") == 1
    assert (root / "etc/trproxy/trproxy-ca-cert.pem").read_bytes() == CERT
    assert trust.install(root, CERT).bundles == installed.bundles  # again: still one copy
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_bytes().count(b"TRPROXY") == 1
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in trust.advice(installed)
    trust.remove(root, installed)
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_bytes() == original + b"\n"
    assert not (root / "etc/trproxy/trproxy-ca-cert.pem").exists()


def test_links_never_lead_out_of_the_container(tmp_path: Path) -> None:
    """A hostile image links its bundle to a host path: the link is resolved inside its
    root, so the host's file is untouched."""
    host_file = tmp_path / "host-bundle.crt"
    host_file.write_bytes(b"HOST\n")
    root = tmp_path / "root"
    (root / "etc/ssl/certs").mkdir(parents=True)
    os.symlink(str(host_file), root / "etc/ssl/certs/ca-certificates.crt")
    os.symlink("../../../../../../..", root / "etc/pki")
    assert trust.resolve_inside(root, "/etc/ssl/certs/ca-certificates.crt") == root.joinpath(
        *host_file.parts[1:])
    assert trust.resolve_inside(root, "/etc/pki/tls") == root / "tls"
    installed = trust.install(root, CERT)
    assert installed.bundles == [] and host_file.read_bytes() == b"HOST\n"
    assert "no system bundle found" in trust.advice(installed)
