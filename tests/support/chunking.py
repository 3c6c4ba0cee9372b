"""Cutting a captured stream differently, so a test can check that decoding does not
depend on how TCP happened to cut the bytes.

A stream is a list of ``(side, bytes)`` chunks in wire order (``side`` is ``"client"`` or
``"server"``); an empty chunk marks that side's end of stream. Every function here keeps
the order of the two sides' bytes and the end-of-stream markers where they are.
"""

from __future__ import annotations

from collections.abc import Iterable

Chunks = list[tuple[str, bytes]]
CLOSE: Chunks = [("client", b""), ("server", b"")]  # both sides hang up


def bytewise(chunks: Chunks) -> Chunks:
    """One byte per chunk."""
    out: Chunks = []
    for side, data in chunks:
        if not data:
            out.append((side, data))
        out.extend((side, data[i:i + 1]) for i in range(len(data)))
    return out


def split_at(chunks: Chunks, *offsets: int) -> Chunks:
    """The stream cut at each byte offset (counted over all chunks). An offset on a chunk
    boundary, or outside the stream, cuts nothing."""
    cuts = sorted(set(offsets))
    out: Chunks = []
    pos = ci = 0
    for side, data in chunks:
        if not data:
            out.append((side, data))
            continue
        start = 0
        while ci < len(cuts) and cuts[ci] < pos + len(data):
            cut = cuts[ci] - pos
            if cut > start:
                out.append((side, data[start:cut]))
                start = cut
            ci += 1
        out.append((side, data[start:]))
        pos += len(data)
    return out


def coalesced(chunks: Chunks) -> Chunks:
    """Consecutive chunks of one side merged: the fewest reads that keep the interleaving."""
    out: Chunks = []
    for side, data in chunks:
        if out and out[-1][0] == side:
            out[-1] = (side, out[-1][1] + data)
        else:
            out.append((side, data))
    return out


def offsets(total: int, every_up_to: int, samples: int, ends: int = 2) -> list[int]:
    """Every inner offset of a stream of at most ``every_up_to`` bytes; of a longer one,
    a stride giving about ``samples`` offsets, plus the first and last ``ends`` offsets
    (where message heads and the close are), so big streams stay fast."""
    if total <= every_up_to:
        return list(range(1, total))
    return sorted({*range(1, total, max(1, total // samples)),
                   *range(1, ends + 1), *range(total - ends, total)})


def total(chunks: Iterable[tuple[str, bytes]]) -> int:
    return sum(len(d) for _, d in chunks)


def side_bytes(chunks: Iterable[tuple[str, bytes]], side: str) -> bytes:
    """Everything one side sent, joined."""
    return b"".join(d for s, d in chunks if s == side)
