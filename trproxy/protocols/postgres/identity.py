"""Backend identity at replay: the process id and cancel key of each replayed connection.

A client sees its backend's pid in BackendKeyData (libpq's ``PQbackendPID``, asyncpg's
``get_server_pid()``), in ``SELECT pg_backend_pid()``, in the NotificationResponses of its
own NOTIFYs, and passes pids to ``pg_terminate_backend``/``pg_cancel_backend``. Replay
keeps these consistent:

* a live connection takes the identity of the recorded connection whose startup it was
  served (startups are served in recorded order, the last one again when more connect).
  Its pid is the recorded pid, so the pids recorded in answers read the same at replay. A
  recorded pid handed out before (more connections at replay than recorded: the last
  startup serves again) is replaced by a new number above any real pid (``SYNTHETIC``):
  like a server, replay never gives two connections of a run the same pid;
* ``SELECT pg_backend_pid()`` answers the live connection's own pid whichever recorded
  connection the answer comes from (``is_backend_pid_sql``); when that is another one
  (a pool hands its connections out in another order), the recorded pid in the answer
  tells which recorded backend the live connection now plays (``Backends.reveal``);
* a live connection served an answer another recorded connection recorded plays that
  one's backend from then on (``Backends.served``: a pool hands its connections out in
  another order than they connected);
* a NotificationResponse names the live connection that plays the recorded notifier;
* pids passed to ``pg_terminate_backend``/``pg_cancel_backend`` are left out of match keys
  (``matching``), so a pool that connects in another order still matches. What the
  recorded ``pg_terminate_backend`` did to its victim (the FATAL, the close) goes to the
  live connection the live request names (``terminated_pids``, ``Backends.recorded_as``:
  the replayer sets ``LookupContext.ends``); a connection that terminates itself gets the
  FATAL and the close whichever recording answers.

The secret key is never recorded (``<redacted>``); the key a replayed connection hands
out is derived from its pid, so a CancelRequest at replay carries a key that
names the connection's ``identity`` (the engine routes it). One ``Backends`` serves the process (one run).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

from . import backend as be
from .backend import backend_key
from .sql import normalize_sql, pid_arguments
from .values import wire_value

SYNTHETIC = 2**22 + 1  # above Linux's largest pid_max: never a recorded pid
_BACKEND_PID = re.compile(r'^SELECT (?:pg_catalog ?\. ?)?pg_backend_pid ?\( ?\)(?: (?:AS )?"?\w+"?)?$', re.I)
_I32 = struct.Struct("!i")


def cancel_key(pid: int, length: int = 4) -> bytes:
    """The secret key replay hands out with ``pid``: stable, and no secret."""
    seed = hashlib.sha256(b"trproxy BackendKeyData %d" % pid).digest()
    return (seed * (length // len(seed) + 1))[:length]


@dataclass(frozen=True)
class Backend:
    """One live connection's identity, and the recorded pid it plays."""

    pid: int
    key: bytes
    recorded_pid: int | None


class Backends:
    """The identities handed out to live connections (see module doc). Used from the
    proxy's event loop only (tests' replay servers step one connection at a time)."""

    def __init__(self) -> None:
        self._live: dict[int, Backend] = {}
        self._playing: dict[int, int] = {}  # recorded pid -> the live pid that plays it
        self._claimed: set[int] = set()  # recorded pids handed out once (bounded by the recording)
        self._synthetic = SYNTHETIC
        self._recorded: dict[int, int] = {}  # recorded connection -> its recorded pid
        self._connections: dict[int, int] = {}  # recorded pid -> its recorded connection

    def claim(self, recorded_pid: int | None, key_length: int = 4) -> Backend:
        """A new connection's identity: the recorded pid the first time it is served; a new
        number after that, as a server gives every connection its own process (a pool
        checks that a reconnection has another pid)."""
        if recorded_pid is not None and recorded_pid > 0 and recorded_pid not in self._claimed \
                and recorded_pid not in self._live:
            pid = recorded_pid
            self._claimed.add(pid)
        else:
            while self._synthetic in self._live:
                self._synthetic += 1
            pid = self._synthetic
            self._synthetic += 1
        backend = self._live[pid] = Backend(pid, cancel_key(pid, key_length), recorded_pid)
        if recorded_pid is not None:
            self._playing.setdefault(recorded_pid, pid)
        return backend

    def started(self, connection: int, recorded_pid: int) -> None:
        """Recorded connection ``connection`` was backend ``recorded_pid`` (its startup)."""
        self._recorded[connection] = recorded_pid
        self._connections[recorded_pid] = connection

    def recorded_as(self, recorded_pid: int) -> int | None:
        """The recorded connection that was backend ``recorded_pid`` (its startup served)."""
        return self._connections.get(recorded_pid)

    def identity(self, pid: int) -> bytes | None:
        """The identity (``Replayer.identity``) of the live connection with ``pid``."""
        backend = self._live.get(pid)
        return backend_key(backend.pid, backend.key) if backend is not None else None

    def served(self, backend: Backend, connection: int) -> None:
        """``backend`` was served an answer recorded on ``connection``: it plays that
        connection's backend now, if its startup was served (so its pid is known)."""
        if (recorded_pid := self._recorded.get(connection)) is not None:
            self.reveal(backend, recorded_pid)

    def reveal(self, backend: Backend, recorded_pid: int) -> None:
        """``backend`` answered as the recorded backend ``recorded_pid``: it plays it now."""
        if self._live.get(backend.pid) is backend:
            self._playing[recorded_pid] = backend.pid

    def release(self, backend: Backend) -> None:
        if self._live.get(backend.pid) is backend:
            del self._live[backend.pid]
            for recorded, live in list(self._playing.items()):
                if live == backend.pid:  # another live connection of that backend, if any
                    heir = next((b.pid for b in self._live.values() if b.recorded_pid == recorded), None)
                    if heir is None:
                        del self._playing[recorded]
                    else:
                        self._playing[recorded] = heir

    def live_pid(self, recorded_pid: int) -> int:
        """The pid of the live connection playing ``recorded_pid`` (itself if none does)."""
        return self._playing.get(recorded_pid, recorded_pid)


BACKENDS = Backends()


def is_backend_pid_sql(sql: object) -> bool:
    """``SELECT pg_backend_pid()`` (optionally named): its one value is the asker's pid."""
    if not isinstance(sql, str) or "backend_pid" not in sql.lower():
        return False
    return _BACKEND_PID.match(normalize_sql(sql)) is not None


def row_pid(row: be.DataRow) -> tuple[int, bool] | None:
    """The pid in a one-column row of ``pg_backend_pid()`` and whether it is binary: ASCII
    digits are text; four other bytes are binary int4 (a pid is below 2**22, so its
    binary form never reads as four digits)."""
    if len(row.values) != 1 or row.values[0] is None:
        return None
    value = row.values[0]
    if value.isdigit():
        return int(value), False
    if len(value) == 4:
        return _I32.unpack(value)[0], True
    return None


def terminated_pids(request: object) -> list[int]:
    """The pids a request passes to ``pg_terminate_backend``: literals in its SQL and the
    Bind parameters its ``$n`` name (not a pid computed in SQL: ``pg_backend_pid()``)."""
    out: list[int] = []
    for item in request if isinstance(request, list) else ():
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (name, value), = item.items()
        sql = value if name == "Query" else value.get("query") if name == "Bind" and isinstance(value, dict) else None
        if not isinstance(sql, str):
            continue
        parameters = value.get("parameters") if isinstance(value, dict) else None
        for signal, bound, n in pid_arguments(sql):
            if signal != "terminate":
                continue
            if not bound:
                out.append(n)
            elif isinstance(parameters, list) and 0 < n <= len(parameters):
                if (pid := _as_pid(parameters[n - 1])) is not None:
                    out.append(pid)
    return out


def _as_pid(value: object) -> int | None:
    """A Bind parameter's pid: text digits, or a binary int2/int4/int8."""
    try:
        raw = value.encode() if isinstance(value, str) else wire_value(value)
    except Exception:  # noqa: BLE001 - a recording is untrusted: not a pid then
        return None
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    return int.from_bytes(raw, "big", signed=True) if len(raw) in (2, 4, 8) else None


def with_pid(row: be.DataRow, pid: int, binary: bool) -> be.DataRow:
    return be.DataRow((_I32.pack(pid) if binary else str(pid).encode(),))
