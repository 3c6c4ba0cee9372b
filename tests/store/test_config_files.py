"""Files a ``config.yaml`` setting names (``http.grpc_descriptors``): read by the config
layer for the dialect (relative paths inside the recording directory, safely; absolute
ones as given), and a file that cannot be read is a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trproxy.protocols import registry
from trproxy.protocols.http import grpc
from trproxy.store.config import configure_protocols
from trproxy.store.errors import FormatError

# a FileDescriptorSet: package p, message M {string text = 1;}, service S { rpc Get(M) returns (M); }
DESCRIPTORS = grpc.encode_fields([[1, [
    [2, "p"], [4, [[1, "M"], [2, [[1, "text"], [3, 1], [5, 9]]]]],
    [6, [[1, "S"], [2, [[1, "Get"], [2, ".p.M"], [3, ".p.M"]]]]]]]])


@pytest.fixture
def overrides(monkeypatch):  # type: ignore[no-untyped-def]
    """The dialects this test configures, forgotten afterwards."""
    table: dict = {}
    monkeypatch.setattr(registry, "_overrides", table)
    return table


def _names(overrides: dict) -> grpc.Names | None:
    return overrides["http"].recorder.args[0].grpc_names


def test_descriptor_sets_named_in_config_give_the_http_dialect_field_names(tmp_path: Path, overrides) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "p.pb").write_bytes(DESCRIPTORS)
    elsewhere = tmp_path / "elsewhere.pb"
    elsewhere.write_bytes(DESCRIPTORS)
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "p.pb").write_bytes(DESCRIPTORS)
    (tmp_path / "rec" / "config.yaml").write_text(
        f"http:\n  grpc_descriptors: [p.pb, {elsewhere}]\n")
    configure_protocols(tmp_path / "rec")
    names = _names(overrides)
    assert names is not None and names.methods == {"p.S/Get": ("p.M", "p.M")}
    form = grpc.body_readable(grpc.frame(b"\x0a\x02hi"), names, "/p.S/Get")
    assert form == {"grpc": [[[1, "hi", "text"]]]}


@pytest.mark.parametrize("setting, error", [
    ("[missing.pb]", "cannot read missing.pb"),
    ("[../outside.pb]", "cannot read ../outside.pb"),
    ("[bad.pb]", "bad.pb: not a FileDescriptorSet"),
    ("p.pb", "must be a list of file paths"),
])
def test_a_descriptor_set_that_cannot_be_used_is_an_error_naming_it(tmp_path: Path, overrides,  # type: ignore[no-untyped-def]
                                                                    setting: str, error: str) -> None:
    (tmp_path / "outside.pb").write_bytes(DESCRIPTORS)
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "bad.pb").write_bytes(b"\x08\x80\x00")
    (rec / "config.yaml").write_text(f"http:\n  grpc_descriptors: {setting}\n")
    with pytest.raises(FormatError, match=error):
        configure_protocols(rec)
