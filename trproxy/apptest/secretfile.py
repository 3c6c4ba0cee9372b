"""The secrets file: real values of the ``<secret:NAME>`` placeholders, kept off the record.

``<recording dir>/.secrets.yaml`` maps each name to the value it stood for when it was
recorded. It is created at record time with mode 0600 and listed in a generated
``<recording dir>/.gitignore``, so committing the recordings never commits it. At test
time each placeholder in a request is filled, in this order of priority, from:

1. the environment: ``TRPROXY_SECRET_<NAME>`` (upper case, other characters ``_``:
   ``login.password`` -> ``TRPROXY_SECRET_LOGIN_PASSWORD``), for CI;
2. the live answer of an earlier test that returned it (chaining, ``apptest/chain.py``);
3. this file.

A placeholder none of them fills makes its test *need a secret* (reported as such,
not sent). The file is untrusted input like the rest of a recording directory: it must
be a mapping of names to strings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..protocols.secrets import SecretVault
from ..store.config import read_config
from ..store.errors import FormatError

SECRETS = ".secrets.yaml"
GITIGNORE = ".gitignore"
ENV_PREFIX = "TRPROXY_SECRET_"
_HEADER = ("# trproxy: the real values behind the <secret:NAME> placeholders of these recordings.\n"
           "# Never commit this file (.gitignore lists it). `trproxy test` reads it; the variable\n"
           "# TRPROXY_SECRET_<NAME> (upper case, other characters _) overrides an entry.\n")


def env_name(name: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if environ is None else environ).get(env_name(name))


def load_secrets(root: Path) -> dict[str, str]:
    """The secrets file's entries ({} when there is none)."""
    path = root / SECRETS
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not readable YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                            for k, v in doc.items()):
        raise FormatError(f"{path}: must map secret names to values")
    return {k: str(v) for k, v in doc.items()}


def save_secret(root: Path, name: str, value: str) -> None:
    """Add one entry (merged with what the file holds now), written atomically, mode 0600."""
    entries = load_secrets(root)
    if entries.get(name) == value:
        return
    entries[name] = value
    root.mkdir(parents=True, exist_ok=True)
    ignore_secrets(root)
    path = root / SECRETS
    tmp = root / f".secrets.yaml.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(_HEADER + yaml.safe_dump(entries, sort_keys=True, allow_unicode=True, width=10**6))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ignore_secrets(root: Path) -> None:
    """Make sure ``<root>/.gitignore`` lists the secrets file."""
    path = root / GITIGNORE
    text = path.read_text("utf-8") if path.exists() else ""
    if SECRETS in text.split():
        return
    prefix = "" if not text or text.endswith("\n") else "\n"
    header = "" if text else "# written by trproxy: real secret values never go into git\n"
    path.write_text(text + prefix + header + SECRETS + "\n", "utf-8")


def use_secrets(root: Path, record: bool) -> SecretVault:
    """The run's vault, from the secrets file, wired into the HTTP dialect's redaction.
    Recording, each newly named value is saved to the file at once (a run killed with
    SIGKILL keeps what it named)."""
    from ..protocols import registry

    vault = SecretVault(load_secrets(root),
                        on_new=(lambda name, value: save_secret(root, name, value)) if record else None)
    doc = read_config(root)
    section = doc.get("http") or {}
    if not isinstance(section, dict):
        raise FormatError(f"{root / 'config.yaml'}: `http` must be a mapping")
    try:
        registry.configure({**doc, "http": {**section, "vault": vault}})
    except ValueError as exc:
        raise FormatError(f"{root / 'config.yaml'}: {exc}") from exc
    return vault
