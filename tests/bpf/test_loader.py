"""The loader: struct mirrors match redirect.h, compile-once-and-pin, warm starts without bcc."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trproxy.bpf import loader

ROOT = str(Path(__file__).resolve().parents[2])


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF)")


@pytest.mark.root
def test_ctypes_mirrors_match_redirect_h() -> None:
    """clang's layout of every shared struct (as bcc decodes it) equals loader's mirror."""
    _require_root()
    from bcc import BPF

    mirrors = {
        "trp_config": loader.Config,
        "trp_port_key": loader.PortKey,
        "trp_listen": loader.Listen,
        "trp_tuple_key": loader.TupleKey,
        "trp_orig_dst": loader.OrigDst,
        "trp_dst_key": loader.DstKey,
        "trp_sock_state": loader.SockState,
        "trp_capture_key": loader.CaptureKey,
        "trp_capture": loader.Capture,
    }
    text = '#include "redirect.h"\n' + "".join(
        f"BPF_ARRAY(m_{name}, struct {name}, 1);\n" for name in mirrors
    )
    b = BPF(text=text.encode(), cflags=[f"-I{loader.PKG_DIR}"])
    compared = 0
    try:
        for name, mirror in mirrors.items():
            clang = b[f"m_{name}".encode()].Leaf
            assert ctypes.sizeof(clang) == ctypes.sizeof(mirror), name
            for fname, *_ in clang._fields_:
                if fname.startswith("_"):
                    continue
                c_field, m_field = getattr(clang, fname), getattr(mirror, fname)
                assert (c_field.offset, c_field.size) == (m_field.offset, m_field.size), (
                    name,
                    fname,
                )
                compared += 1
        assert compared >= 30
    finally:
        b.cleanup()


LOAD = r"""
import json, sys, time
t0 = time.perf_counter()
import trproxy.bpf.loader as L
L.PIN_ROOT = sys.argv[1]
t1 = time.perf_counter()
p = L.load()
t2 = time.perf_counter()
print(json.dumps({"cold": p.cold, "dir": p.pin_dir, "bcc": "bcc" in sys.modules,
                  "import_s": t1 - t0, "load_s": t2 - t1}))
"""


@pytest.mark.root
def test_compile_once_pin_and_warm_start_without_bcc(record_property) -> None:
    _require_root()
    pin_root = f"trproxy-test-{os.getpid()}"  # its own pin root: the real pins stay untouched
    bpffs = loader.ensure_bpffs()
    assert bpffs
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        # Three cold starts racing: one rename wins, all end up on the same objects.
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", LOAD, pin_root], stdout=subprocess.PIPE, text=True, env=env
            )
            for _ in range(3)
        ]
        cold = [json.loads(p.communicate(timeout=120)[0]) for p in racers]
        assert all(r["bcc"] for r in cold if r["cold"])
        dirs = {r["dir"] for r in cold}
        assert dirs == {f"{bpffs}/{pin_root}/{loader.source_hash()}"}
        assert sorted(os.listdir(f"{bpffs}/{pin_root}")) == [loader.source_hash()]  # no tmp-*

        warm = json.loads(
            subprocess.run(
                [sys.executable, "-c", LOAD, pin_root],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert warm["cold"] is False
        assert warm["bcc"] is False  # a warm start never imports bcc
        record_property("cold_load_s", max(r["load_s"] for r in cold))
        record_property("warm_load_s", warm["load_s"])
        print(
            f"\ncold load {max(r['load_s'] for r in cold):.3f}s, warm load {warm['load_s'] * 1000:.1f}ms"
        )
    finally:
        shutil.rmtree(f"{bpffs}/{pin_root}", ignore_errors=True)


def test_missing_headers_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("bcc")
    monkeypatch.setattr(loader, "headers_available", lambda: False)
    with pytest.raises(loader.KernelHeadersMissingError, match="no kernel headers"):
        loader._compile()


def test_missing_bcc_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)  # makes `import bcc` raise ImportError
    with pytest.raises(loader.BccMissingError, match="bcc is not importable"):
        loader._compile()


def test_source_hash_covers_source_and_header() -> None:
    h = loader.source_hash()
    assert len(h) == 16 and h == loader.source_hash()
    assert all(
        spec.name.startswith(loader.PROG_NAME_PREFIX) and len(spec.name) < 16
        for spec in (*loader.PROGRAMS, loader.LOOKUP)
    )


VARIANT = r"""
import sys
from pathlib import Path
import trproxy.bpf.loader as L
L.PIN_ROOT, d = sys.argv[1], Path(sys.argv[2])
L.PKG_DIR, L.SOURCE, L.HEADER = d, d / "redirect.bpf.c", d / "redirect.h"
print(L.load().pin_dir)
"""


@pytest.mark.root
def test_a_version_with_another_layout_is_cleaned_without_the_mirrors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins of another source whose trp_orig key is longer: reading that map through the
    mirrors would overflow them, so cleanup only drops its dead configs, then the version."""
    _require_root()
    from trproxy.bpf import syscall
    from trproxy.redirect import cleanup_leftovers

    pin_root = f"trproxy-test-layout-{os.getpid()}"
    shutil.copy(loader.SOURCE, tmp_path / "redirect.bpf.c")
    header = loader.HEADER.read_text()
    assert header.count("__u8 _pad[3];") == 1  # trp_tuple_key's
    (tmp_path / "redirect.h").write_text(header.replace("__u8 _pad[3];", "__u8 _pad[7];"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        pin_dir = subprocess.run([sys.executable, "-c", VARIANT, pin_root, str(tmp_path)], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip()
        maps = loader.open_version(pin_dir)
        try:
            assert not maps.layout_ok()
            info = syscall.MapInfo()
            syscall.obj_info(maps.fds["trp_orig"], info)
            assert info.key_size == ctypes.sizeof(loader.TupleKey) + 4
            dead = loader.Config(owner_pid=999_999_999, owner_start=12345)  # above pid_max
            maps.set_config(777, dead)  # trp_config's layout is the same in both
            assert maps.owners() == {777: (999_999_999, 12345)}
        finally:
            loader.close_maps(maps)
        monkeypatch.setattr(loader, "PIN_ROOT", pin_root)
        removed = cleanup_leftovers()
        assert "redirect of cgroup id 777 (owner pid 999999999)" in removed
        assert f"pinned programs {pin_dir}" in removed
        assert not os.path.exists(pin_dir)
    finally:
        shutil.rmtree(f"{loader.ensure_bpffs()}/{pin_root}", ignore_errors=True)
