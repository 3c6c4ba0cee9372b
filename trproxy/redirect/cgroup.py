"""cgroup v2 plumbing for runs: find the hierarchy, create and remove run cgroups, resolve
an existing cgroup (path or Docker container id), and tell whether a run's owner is alive.

Invariants:
- The cgroup2 mount is read from /proc/self/mounts, never assumed.
- trproxy's own cgroups are ``<mount>/trproxy/v2/run-<pid>-<start>-<n>``: <pid> and <start>
  (its /proc/<pid>/stat start time) name the owning process, so a leftover is recognised
  even after the pid has been reused; <n> numbers the runs of one process. (``v2``: trproxy
  before fail-closed runs cleaned up ``<mount>/trproxy/run-*`` by detaching and freeing
  their processes; it must not do that to a run whose processes are to stay cut off.)
- A cgroup id is the inode number of the cgroup directory (kernfs, Linux 5.5+), the value
  bpf_get_current_cgroup_id() returns.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
from pathlib import Path

from trproxy.redirect.errors import RedirectError

ROOT_NAME = "trproxy/v2"
RUN_RE = re.compile(r"^run-(\d+)-(\d+)-(\d+)$")
_counter = itertools.count()


def cgroup2_mount() -> str | None:
    """Mount point of the cgroup v2 hierarchy, from /proc/self/mounts."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    # fstab-style octal escapes: "\040" is a space (proc(5), /proc/pid/mounts)
                    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
    except OSError:
        return None
    return None


def require_mount() -> Path:
    mount = cgroup2_mount()
    if mount is None:
        raise RedirectError(
            "no cgroup v2 hierarchy is mounted (none in /proc/self/mounts): mount it with "
            "`mount -t cgroup2 none /sys/fs/cgroup/unified` (any directory works) or boot "
            "with systemd.unified_cgroup_hierarchy=1"
        )
    return Path(mount)


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (proc(5), /proc/pid/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]


def owner_alive(pid: int, start: int) -> bool:
    return proc_start_time(pid) == start


def own_cgroup() -> str:
    """This process's cgroup v2 path relative to the mount ("0::<path>" in /proc/self/cgroup)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def cgroup_id(path: str | Path) -> int:
    return os.stat(path).st_ino


def create_run(mount: Path) -> Path:
    """Create a fresh run cgroup owned by this process."""
    root = mount / ROOT_NAME
    root.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    start = proc_start_time(pid)
    while True:
        path = root / f"run-{pid}-{start}-{next(_counter)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue  # a leftover of a previous process image with the same pid and start


def procs(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def all_procs(path: Path) -> list[int]:
    """Processes in a cgroup and its descendants (zombies are not listed: cgroup-v2.rst)."""
    found = []
    for dirpath, _, _ in os.walk(path):
        found += procs(Path(dirpath))
    return found


def other_netns(path: Path) -> bool:
    """Does a process in the cgroup live in another network namespace than this one?"""
    own = os.stat("/proc/self/ns/net").st_ino
    for pid in all_procs(path):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != own:
                return True
        except OSError:
            continue  # gone meanwhile
    return False


def find_by_id(mount: Path, cg_id: int) -> Path | None:
    """The cgroup directory whose inode is ``cg_id`` (None when it is gone)."""
    for dirpath, _, _ in os.walk(mount):
        try:
            if os.stat(dirpath).st_ino == cg_id:
                return Path(dirpath)
        except OSError:
            continue
    return None


def move_procs(src: Path, dst: Path) -> int:
    """Move every process of src into dst (repeating while they fork); returns how many."""
    moved = 0
    for _ in range(100):
        pids = procs(src)
        if not pids:
            return moved
        for pid in pids:
            try:
                (dst / "cgroup.procs").write_text(str(pid))
                moved += 1
            except ProcessLookupError:
                pass  # exited meanwhile
    raise RedirectError(f"processes keep appearing in {src}; cannot empty it")


def remove(path: Path) -> None:
    """Remove a cgroup and its descendants, moving their processes to its parent first.
    Missing directories are fine (another cleanup got there first)."""
    if not path.is_dir():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        remove(child)
        # remove(child) moved the child's processes into path; they move on below.
    move_procs(path, path.parent)
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise RedirectError(f"cannot remove cgroup {path}: {e}") from e


def run_cgroups(mount: Path) -> list[tuple[Path, int, int]]:
    """trproxy's run cgroups with their owner (path, pid, start)."""
    root = mount / ROOT_NAME
    if not root.is_dir():
        return []
    runs = []
    for p in root.iterdir():
        m = RUN_RE.match(p.name)
        if m and p.is_dir():
            runs.append((p, int(m.group(1)), int(m.group(2))))
    return runs


def path_of(spec: str, mount: Path) -> Path | None:
    """The cgroup ``spec`` names as a path (absolute, relative to the mount, or as in
    /proc/<pid>/cgroup), or None."""
    candidates = [Path(spec)] if spec.startswith(str(mount)) else []
    candidates.append(mount / spec.lstrip("/"))
    for c in candidates:
        if c.is_dir() and (c / "cgroup.procs").exists():
            return c.resolve()
    return None


def of_process(pid: int, mount: Path) -> Path | None:
    """The cgroup v2 directory of a process ("0::<path>" in /proc/<pid>/cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return mount / line[3:].strip().lstrip("/")
    except OSError:
        return None
    return None


def resolve(spec: str, mount: Path) -> Path:
    """A cgroup given as a path or as a container id (full, or a unique prefix; any case)."""
    path = path_of(spec, mount)
    if path is not None:
        return path
    if re.fullmatch(r"[0-9a-fA-F]{1,64}", spec):
        found = find_containers(spec, mount)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise RedirectError(f"container id {spec} is ambiguous: {', '.join(map(str, found))}")
        raise RedirectError(
            f"no cgroup for container {spec} under {mount} (looked for <parent>/{spec}... as "
            f"cgroupfs, kubepods and --cgroup-parent make, and <runtime>-{spec}....scope as "
            "systemd makes); is it running?"
        )
    raise RedirectError(f"{spec} is neither a cgroup under {mount} nor a container id")


# cgroupfs: <parent>/<id> (docker/<id>, a --cgroup-parent, kubepods/<qos>/pod<uid>/<id>);
# systemd: <runtime>-<id>.scope (docker-, cri-containerd-, crio-, libpod-)
_CONTAINER_DIR = re.compile(r"^(?:[a-z][a-z-]*-([0-9a-f]{64})\.scope|([0-9a-f]{64}))$")


def find_containers(prefix: str, mount: Path) -> list[Path]:
    """Cgroups of containers whose id starts with ``prefix``, in any cgroup parent."""
    prefix = prefix.lower()
    found = []
    for dirpath, dirnames, _ in os.walk(mount):
        for d in list(dirnames):
            m = _CONTAINER_DIR.match(d)
            if m and (m.group(1) or m.group(2)).startswith(prefix):
                found.append(Path(dirpath, d))
                dirnames.remove(d)  # a container's own sub-cgroups are not other containers
    return found
