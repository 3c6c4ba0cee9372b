"""gRPC message decode throughput beside the protobuf runtime (upb), same bytes.

A body of 2000 length-prefixed ``trproxy.echo.Item`` messages (``tests/e2e/apps/grpc/
echo.proto``, compiled with grpc_tools' protoc into a temporary directory: strings, a
negative int64, a double, repeated strings, bytes, a sint32, an enum, a nested message,
a float). Timed, in one run (best of 5):

* ``trproxy``: ``grpc.body_readable`` (framing, schema-less field tree, exact), and
  ``grpc.body_bytes`` (the tree encoded back, as replay does);
* ``upb parse``: ``Item.FromString`` per message (C, with the schema, to objects only);
* ``upb parse+MessageToDict``: the same made readable data, the work trproxy does.

Printed as MB/s and as throughput ratios (trproxy / reference: above 1 means faster).
Run: ``python -m benchmarks.bench_grpc`` (or ``main()``).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path

from trproxy.protocols.http import grpc

PROTO = Path(__file__).parents[1] / "tests" / "e2e" / "apps" / "grpc" / "echo.proto"


def _best(fn, n: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from google.protobuf.json_format import MessageToDict
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as out:
        assert protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}", str(PROTO)]) == 0
        sys.path.insert(0, out)
        try:
            pb = importlib.import_module("echo_pb2")
        finally:
            sys.path.remove(out)
    messages = [pb.Item(name=f"item-{i}", count=-i, price=i * 1.5, tags=["a", "bb", "ccc"],
                        blob=bytes(range(16)), delta=-i, kind=1,
                        child=pb.Item(name="inner", count=i), ratio=0.5).SerializeToString()
                for i in range(2000)]
    body = b"".join(grpc.frame(m) for m in messages)
    form = grpc.body_readable(body)
    assert form is not None and grpc.body_bytes(form) == body
    mb = len(body) / 1e6
    rates = {
        "trproxy decode": mb / _best(lambda: grpc.body_readable(body)),
        "trproxy encode": mb / _best(lambda: grpc.body_bytes(form)),
        "upb parse": mb / _best(lambda: [pb.Item.FromString(m) for m in messages]),
        "upb parse+MessageToDict": mb / _best(
            lambda: [MessageToDict(pb.Item.FromString(m)) for m in messages]),
    }
    print(f"{len(messages)} messages, {len(body)} bytes")
    for name, rate in rates.items():
        print(f"  {name:26s} {rate:8.2f} MB/s")
    for ref in ("upb parse", "upb parse+MessageToDict"):
        print(f"  trproxy decode / {ref}: {rates['trproxy decode'] / rates[ref]:.3f}x")


if __name__ == "__main__":
    main()
