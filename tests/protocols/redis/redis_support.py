"""Helpers for the Redis dialect tests: decoding and recording a stream the way the proxy does.

Cutting streams differently lives in ``tests.support.chunking``, the tee relay in
``tests.support.tee``, replay against the real store in ``tests.support.replay_server``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.chunking import CLOSE, Chunks, offsets
from trproxy.protocols.base import NEED_DATA, Direction, Interaction, ProtocolError, Pushed
from trproxy.protocols.redis import RedisCodec, RedisRecorder


def redis_offsets(total: int) -> list[int]:
    """Every offset of a small stream; evenly spread ones (and the ends) of a big one."""
    return offsets(total, every_up_to=2048, samples=48 if total < 65536 else 10)


def decode(chunks: Chunks, remember: bool = False, **limits: int) -> tuple[list, str | None]:
    """Every message the codec yields (side, message), and the error class name if any
    (``remember``: as the recorder's codec, which remembers pieces it decoded whole)."""
    from trproxy.protocols.redis.recorder import _no_secret

    codec = RedisCodec(**limits, remember=_no_secret if remember else None)
    out = []
    try:
        for side, data in chunks + CLOSE:
            codec.feed(Direction(side), data)
            while (m := codec.next_message()) is not NEED_DATA:
                out.append((m.direction.value, m))
    except ProtocolError as exc:
        assert_not_a_bug(exc)
        return out, type(exc).__name__
    return out, None


def assert_not_a_bug(exc: ProtocolError) -> None:
    """The decoders turn a stray ValueError/IndexError into a DecodeError (so the proxy
    survives a decoder bug); in tests such a conversion - it keeps the original as
    ``__cause__`` - is a failure."""
    assert exc.__cause__ is None, f"decoder bug surfaced as {exc!r}: {exc.__cause__!r}"


@dataclass
class Recording:
    items: list[Interaction | Pushed]  # in the order the recorder returned them
    error: str | None
    unanswered: list

    @property
    def interactions(self) -> list[Interaction]:
        return [i for i in self.items if isinstance(i, Interaction)]

    def plain(self) -> list[dict]:
        """Interactions, and pushed messages as ``{"pushed": [...]}``, in order."""
        return [{"pushed": i.responses} if isinstance(i, Pushed) else
                {"request": i.request, "responses": i.responses, "lifetime": i.lifetime,
                 "summary": i.summary, **({"unanswered": True} if i.unanswered else {})}
                for i in self.items]


def record(chunks: Chunks, close: bool = True, **limits: int) -> Recording:
    """Feed a stream to a recorder the way the proxy does; stops at the first error."""
    recorder = RedisRecorder(**limits)
    out: list[Interaction | Pushed] = []
    error = None
    try:
        for side, data in chunks + (CLOSE if close else []):
            out += recorder.feed(Direction(side), data)
    except ProtocolError as exc:
        assert_not_a_bug(exc)
        error = type(exc).__name__
    return Recording(out, error, recorder.unanswered)

