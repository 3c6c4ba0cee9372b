"""Hostile recording directories, built here: each is refused with a one-line error, and
nothing outside the directory is read or written.

"Not read" is shown with a FIFO outside as the target of every link a read would follow:
opening it blocks until a writer comes, so a test finishes only if it was never opened
(pytest-timeout turns a hang into a failure). "Not written" is shown by the outside
directory's files, contents and modification times staying as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proc import run_trproxy
from trproxy.apptest.noise import load_config, write_default_config
from trproxy.apptest.reports import write_reports
from trproxy.apptest.secretfile import GITIGNORE, SECRETS, load_secrets, save_secret
from trproxy.apptest.testcase import TestCase, load_tests, write_test
from trproxy.apptest.testrun import TestRun
from trproxy.protocols.base import BlobUnavailable
from trproxy.store import (
    DirBlobStore,
    Exchange,
    FormatError,
    MockWriter,
    UnsafeFile,
    existing_test_sets,
    load_mocks,
    recover,
    yamlio,
)
from trproxy.store.config import read_config
from trproxy.store.recording import MOCKS, DocumentWriter
from trproxy.store.yamlio import dump

pytestmark = pytest.mark.timeout(60)

SECRET = "root:$6$not-for-a-recording:19000:0:99999:7:::\n"


class Outside:
    """A directory beside the recording: a secret file and a FIFO that must never be opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.secret = path / "shadow"
        self.secret.write_text(SECRET)
        os.chmod(self.secret, 0o600)
        self.fifo = path / "sentinel.fifo"
        os.mkfifo(self.fifo)
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int, bytes]]:
        out = {}
        for p in sorted(self.path.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_mtime_ns, st.st_size, p.read_bytes() if p.is_file() else b"")
        return out

    def untouched(self) -> bool:
        return self.snapshot() == self.before


@pytest.fixture
def outside(tmp_path):
    out = Outside(tmp_path / "outside")
    yield out
    assert out.untouched(), "something outside the recording directory was written"


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "rec"
    (path / "test-set-0").mkdir(parents=True)
    return path


def _one_line(exc: BaseException, *names: str) -> str:
    text = str(exc)
    assert "\n" not in text, text
    for name in names:
        assert name in text, text
    return text


def _exchange_doc(i: int = 0) -> dict:
    return Exchange(protocol="redis", destination="127.0.0.1:6379", request=["GET", f"k{i}"],
                    responses=[f"v{i}"], connection=1, seq=i).to_doc()


def _mocks_text(n: int = 2) -> str:
    return "".join(dump(_exchange_doc(i)) for i in range(n))


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


# -- 1. links and special files ---------------------------------------------------------


def test_a_partial_file_linked_outside_is_not_recovered(root, outside):
    """The reproduced attack: ``mocks.yaml.partial-<dead pid> -> /etc/shadow`` made root
    copy the file into a world-readable mocks.yaml."""
    partial = root / "test-set-0" / f"{MOCKS}.partial-{_dead_pid()}"
    partial.symlink_to(outside.fifo)
    with pytest.raises(UnsafeFile) as err:
        recover(root)
    _one_line(err.value, str(partial), "symbolic link")
    partial.unlink()
    partial.symlink_to(outside.secret)
    with pytest.raises(UnsafeFile):
        recover(root)
    assert not (root / "test-set-0" / MOCKS).exists()
    assert partial.is_symlink()  # left for the user to look at


def test_recovery_does_not_write_through_a_linked_mocks_file(root, outside):
    test_set = root / "test-set-0"
    (test_set / f"{MOCKS}.partial-{_dead_pid()}").write_text(_mocks_text())
    (test_set / MOCKS).symlink_to(outside.secret)
    with pytest.raises(UnsafeFile) as err:
        recover(root)
    _one_line(err.value, str(test_set / MOCKS), "symbolic link")
    assert outside.secret.read_text() == SECRET


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_partial_file_that_is_not_a_regular_file_is_refused(root, kind):
    partial = root / "test-set-0" / f"{MOCKS}.partial-{_dead_pid()}"
    os.mkfifo(partial) if kind == "fifo" else partial.mkdir()
    with pytest.raises(UnsafeFile) as err:
        recover(root)
    _one_line(err.value, str(partial), "FIFO" if kind == "fifo" else "directory")


def test_a_linked_test_set_is_not_followed(root, outside):
    """``test-set-1 -> /somewhere``: neither recovery nor loading nor recording goes there."""
    (outside.path / f"{MOCKS}.partial-{_dead_pid()}").write_text(_mocks_text())
    (outside.path / MOCKS).symlink_to(outside.fifo)
    outside.before = outside.snapshot()
    linked = root / "test-set-1"
    linked.symlink_to(outside.path, target_is_directory=True)
    for step in (lambda: recover(root), lambda: existing_test_sets(root), lambda: load_mocks(linked),
                 lambda: MockWriter(linked / MOCKS), lambda: DocumentWriter(linked / MOCKS)):
        with pytest.raises(UnsafeFile) as err:
            step()
        _one_line(err.value, str(linked), "symbolic link")


def test_a_linked_recording_file_is_never_opened(root, outside):
    """mocks.yaml, its cache, config.yaml and a test case as links to the FIFO outside."""
    test_set = root / "test-set-0"
    (test_set / "tests").mkdir()
    (test_set / MOCKS).symlink_to(outside.fifo)
    with pytest.raises(UnsafeFile) as err:
        load_mocks(test_set)
    _one_line(err.value, str(test_set / MOCKS))

    (test_set / MOCKS).unlink()
    (test_set / MOCKS).write_text(_mocks_text())
    (test_set / (MOCKS + ".cache")).symlink_to(outside.fifo)
    with pytest.raises(UnsafeFile) as err:
        load_mocks(test_set)
    _one_line(err.value, str(test_set / (MOCKS + ".cache")))

    (root / "config.yaml").symlink_to(outside.fifo)
    for step in (lambda: read_config(root), lambda: load_config(root)):
        with pytest.raises(UnsafeFile) as err:
            step()
        _one_line(err.value, str(root / "config.yaml"))
    write_default_config(root)  # a link where the config is: left alone, not written through
    assert (root / "config.yaml").is_symlink()

    (test_set / "tests" / "test-1.yaml").symlink_to(outside.secret)
    with pytest.raises(UnsafeFile) as err:
        load_tests(test_set)
    _one_line(err.value, str(test_set / "tests" / "test-1.yaml"))


@pytest.mark.parametrize("what", ["mocks", "cache", "config", "test"])
def test_a_fifo_in_the_recording_is_refused_without_blocking(root, what):
    test_set = root / "test-set-0"
    (test_set / "tests").mkdir()
    (test_set / MOCKS).write_text(_mocks_text())
    path, load = {
        "mocks": (test_set / MOCKS, lambda: load_mocks(test_set)),
        "cache": (test_set / (MOCKS + ".cache"), lambda: load_mocks(test_set)),
        "config": (root / "config.yaml", lambda: read_config(root)),
        "test": (test_set / "tests" / "test-1.yaml", lambda: load_tests(test_set)),
    }[what]
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    with pytest.raises(UnsafeFile) as err:
        load()
    _one_line(err.value, str(path), "FIFO")


def test_body_files_refuse_fifos_links_and_linked_directories(root, outside):
    """A FIFO in bodies/ blocked the event loop forever."""
    test_set = root / "test-set-0"
    store = DirBlobStore(test_set)
    (test_set / "bodies").mkdir()
    os.mkfifo(test_set / "bodies" / ("a" * 64))
    (test_set / "bodies" / ("b" * 64)).symlink_to(outside.secret)
    for ref, what in ((f"bodies/{'a' * 64}", "FIFO"), (f"bodies/{'b' * 64}", "symbolic link")):
        with pytest.raises(BlobUnavailable) as err:
            store.open(ref)
        _one_line(err.value, ref, what)
    (test_set / "bodies").rename(test_set / "old-bodies")
    (test_set / "bodies").symlink_to(outside.path, target_is_directory=True)
    with pytest.raises(BlobUnavailable) as err:
        store.open("bodies/sentinel.fifo")
    _one_line(err.value, "symbolic link")
    writer = store.create()  # recording into a linked bodies/: only the digest is kept
    writer.write(b"payload")
    assert writer.commit("c" * 64) is None
    store.close()


def test_test_cases_and_reports_are_not_written_through_links(root, outside):
    test_set = root / "test-set-0"
    (test_set / "tests").symlink_to(outside.path, target_is_directory=True)
    case = TestCase("test-1", {"method": "GET", "url": "/"}, {"status": 200})
    with pytest.raises(UnsafeFile) as err:
        write_test(test_set, case)
    _one_line(err.value, str(test_set / "tests"), "symbolic link")
    (root / "reports").symlink_to(outside.path, target_is_directory=True)
    with pytest.raises(UnsafeFile) as err:
        write_reports(TestRun(test_set=test_set), root / "reports")
    _one_line(err.value, str(root / "reports"))


def test_the_secrets_file_and_gitignore_are_neither_read_nor_written_through_links(root, outside):
    """``.secrets.yaml`` (read by ``trproxy test``, written when recording) and the
    ``.gitignore`` listing it are files of the recording directory like the others."""
    (root / SECRETS).symlink_to(outside.fifo)
    with pytest.raises(UnsafeFile) as err:
        load_secrets(root)
    _one_line(err.value, str(root / SECRETS), "symbolic link")
    (root / SECRETS).unlink()
    (root / GITIGNORE).symlink_to(outside.secret)
    with pytest.raises(UnsafeFile) as err:
        save_secret(root, "login.password", "hunter2")
    _one_line(err.value, str(root / GITIGNORE), "symbolic link")
    assert not (root / SECRETS).exists()


def test_a_writer_does_not_write_through_a_linked_target(root, outside):
    """new-episodes closes over an existing mocks.yaml: a link there is refused, not followed."""
    test_set = root / "test-set-0"
    (test_set / MOCKS).symlink_to(outside.secret)
    writer = MockWriter(test_set / MOCKS)
    writer.write(Exchange.from_doc(_exchange_doc()))
    with pytest.raises(UnsafeFile) as err:
        writer.close()
    _one_line(err.value, str(test_set / MOCKS), "refused to replace")
    assert outside.secret.read_text() == SECRET


@pytest.mark.parametrize("name", ["../outside", "a/b", "..", "/etc"])
def test_a_test_set_name_is_one_directory_name(root, name):
    from trproxy.store import test_set_dir

    with pytest.raises(UnsafeFile) as err:
        test_set_dir(root, name)
    _one_line(err.value, "test set")


# -- 2. YAML that costs more than it says -----------------------------------------------

BILLION_LAUGHS = "---\nversion: trproxy/v1\nkind: redis\nspec:\n  request: [GET, k]\n  responses:\n" + "".join(
    f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" if i else "  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(10))


def test_billion_laughs_is_refused_before_it_expands(root):
    """1.3 KB that took 35 s and 3.5 GB and left a 1.8 GB cache: refused at the first
    anchor, and no cache is written for a file that did not load."""
    test_set = root / "test-set-0"
    (test_set / MOCKS).write_text(_mocks_text(1) + BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1500
    line = _mocks_text(1).count("\n") + 7  # the first anchor
    with pytest.raises(FormatError) as err:
        load_mocks(test_set)
    _one_line(err.value, str(test_set / MOCKS), f"document 2, line {line}", "anchor &l0",
              "`trproxy record` makes a new one")
    assert not (test_set / (MOCKS + ".cache")).exists()


@pytest.mark.parametrize(("text", "problem"), [
    ("a: &x 1\nb: 2\n", "anchor &x"),
    ("a: *x\n", "alias *x"),
    ("a: !!python/object:os.system 1\n", "tag tag:yaml.org,2002:python/object:os.system"),
    ("a: !!binary aGk=\n", "tag"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than 100"),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 150)), "nested deeper than 100"),
    ("a: 'unterminated\n", "invalid YAML"),
    ("a: 1\n--- \nb: 2\n", None),  # two documents in one file is not refused in a stream
])
def test_what_recordings_never_hold_is_refused(text, problem):
    if problem is None:
        assert len(yamlio.load_stream(text.encode()).docs) == 2
        with pytest.raises(FormatError, match="more than one document"):
            yamlio.load_one(text)
        return
    with pytest.raises(FormatError) as err:
        yamlio.load_stream(("---\nfirst: doc\n---\n" + text).encode(), "x.yaml")
    _one_line(err.value, "x.yaml, document 2, line ", problem)
    assert err.value.line >= 3


def test_size_limits_refuse_before_parsing(root, monkeypatch):
    test_set = root / "test-set-0"
    (test_set / MOCKS).write_text(_mocks_text(10))
    monkeypatch.setattr(yamlio, "MAX_DOCUMENT_BYTES", 100)
    with pytest.raises(FormatError) as err:
        load_mocks(test_set)
    _one_line(err.value, "document 1, line 1", "over the limit of 100")
    monkeypatch.setattr(yamlio, "MAX_FILE_BYTES", 1000)
    with pytest.raises(FormatError) as err:
        load_mocks(test_set)
    _one_line(err.value, str(test_set / MOCKS), "over the limit of 1000")
    assert not (test_set / (MOCKS + ".cache")).exists()


# -- 4. wrong-typed envelopes -----------------------------------------------------------


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda d: d["spec"]["metadata"].update(connection="3"), "spec.metadata.connection must be an integer, not text '3'"),
    (lambda d: d["spec"]["metadata"].update(tests="test-1"), "spec.metadata.tests must be a list"),
    (lambda d: d["spec"]["metadata"].update(tests=[1]), "spec.metadata.tests must be a list of test names"),
    (lambda d: d["spec"]["metadata"].update(tls="yes"), "spec.metadata.tls must be true or false"),
    (lambda d: d["spec"]["metadata"].update(duration_ms=True), "duration_ms must be a number, not boolean"),
    (lambda d: d["spec"].update(responses={"a": 1}), "spec.responses must be a list, not mapping"),
    (lambda d: d["spec"].update(lifetime="forever"), "spec.lifetime must be data or session"),
    (lambda d: d["spec"].update(metadata=[1]), "spec.metadata must be a mapping"),
    (lambda d: d["spec"].pop("request"), "spec has no request"),
    (lambda d: d.pop("spec"), "spec is missing"),
    (lambda d: d.update(kind=5), "kind must be text"),
    (lambda d: d.pop("version"), "unsupported recording version None"),
    (lambda d: d.update(spec="x" * 500), "spec must be a mapping, not text 'xxxx"),
])
def test_a_wrong_typed_envelope_field_is_refused_at_load(root, edit, problem):
    test_set = root / "test-set-0"
    doc = _exchange_doc(1)
    edit(doc)
    text = dump(_exchange_doc(0)) + dump(doc) + dump(_exchange_doc(2))
    (test_set / MOCKS).write_text(text)
    line = text.splitlines().index("---", 1) + 1
    with pytest.raises(FormatError) as err:
        load_mocks(test_set)
    message = _one_line(err.value, f"{test_set / MOCKS}, document 2, line {line}: ", problem)
    assert len(message) < 300
    assert not (test_set / (MOCKS + ".cache")).exists()


def test_a_document_that_is_not_a_mapping_is_refused(root):
    (root / "test-set-0" / MOCKS).write_text(_mocks_text(1) + "---\n- a list\n")
    with pytest.raises(FormatError) as err:
        load_mocks(root / "test-set-0")
    _one_line(err.value, "document 2", "a list, not a mapping")


def test_a_cache_made_by_other_code_is_checked_again_and_errors_name_the_line(root, monkeypatch):
    """A cached exchange is checked again only when it is served, so a cache made by
    another trproxy (older checks) is not used: the YAML is parsed and checked by this
    code, and its errors name the document and the line."""
    test_set = root / "test-set-0"
    (test_set / MOCKS).write_text(_mocks_text(3))
    assert len(load_mocks(test_set)) == 3  # parsed, checked, cached
    from trproxy.store import model, recording

    line = (test_set / MOCKS).read_text().splitlines().index("---", 1) + 1

    def refuse_seq_1(doc):
        if doc["spec"]["metadata"]["seq"] == 1:
            raise FormatError("refused by a newer check")
        return model.Exchange.__new__(model.Exchange)

    monkeypatch.setattr(recording.Exchange, "from_doc", staticmethod(refuse_seq_1))
    monkeypatch.setattr(recording, "_code", lambda: b"the source of a newer trproxy")
    with pytest.raises(FormatError) as err:
        load_mocks(test_set)
    _one_line(err.value, f"document 2, line {line}: refused by a newer check")


def test_a_test_case_with_a_wrong_typed_port_is_a_one_line_error(root):
    folder = root / "test-set-0" / "tests"
    folder.mkdir()
    (folder / "test-1.yaml").write_text(dump({"version": "trproxy/v1", "kind": "http-test", "spec": {
        "request": {"method": "GET", "url": "/"}, "response": {"status": 200}, "port": "http"}}))
    with pytest.raises(FormatError) as err:
        load_tests(root / "test-set-0")
    _one_line(err.value, str(folder / "test-1.yaml"), "spec.port must be a port number")


# -- the command line -------------------------------------------------------------------


def _hostile_dirs(tmp_path: Path, outside: Outside) -> dict[str, Path]:
    made = {}
    for name, build in {
        "linked mocks": lambda s: (s / MOCKS).symlink_to(outside.fifo),
        "billion laughs": lambda s: (s / MOCKS).write_text(BILLION_LAUGHS),
        "wrong type": lambda s: (s / MOCKS).write_text(_mocks_text(1).replace("connection: 1", "connection: one")),
        "fifo mocks": lambda s: os.mkfifo(s / MOCKS),
    }.items():
        test_set = tmp_path / name.replace(" ", "-") / "test-set-0"
        test_set.mkdir(parents=True)
        build(test_set)
        made[name] = test_set.parent
    return made


def test_the_cli_prints_one_line_and_exits_2(tmp_path, outside):
    for (name, rec), args in zip(_hostile_dirs(tmp_path, outside).items(), (
            ["replay", "--no-redirect", "--forward", "127.0.0.1:1=127.0.0.1:2"],
            ["run", "--mode", "auto", "--no-redirect"],
            ["replay", "--no-redirect"],
            ["run", "--mode", "new-episodes", "--no-redirect"]), strict=True):
        out = run_trproxy(*args, "--dir", str(rec), "--", "true", timeout=60)
        assert out.returncode == 2, (name, out.stderr)
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, (name, out.stderr)
        assert out.stderr.startswith(f"trproxy: {rec / 'test-set-0' / MOCKS}"), (name, out.stderr)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="trproxy replay with the redirect needs root")
def test_replay_with_a_hostile_directory_ends_in_one_line(tmp_path, outside):
    """``trproxy replay -- true`` as root: refused before any redirect or child."""
    rec = _hostile_dirs(tmp_path, outside)["linked mocks"]
    marker = tmp_path / "child-ran"
    out = run_trproxy("replay", "--dir", str(rec), "--", "touch", str(marker), timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr == (f"trproxy: {rec / 'test-set-0' / MOCKS}: refused: it is a symbolic link "
                          "(a recording holds only regular files and directories; replace or delete it)\n")
    assert not marker.exists()


def test_a_file_given_as_the_recording_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "rec").write_text("not a directory")
    out = run_trproxy("replay", "--no-redirect", "--dir", str(tmp_path / "rec"), "--", "true", timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "nothing to replay" in out.stderr
