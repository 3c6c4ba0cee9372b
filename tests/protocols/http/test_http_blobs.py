"""Bodies over ``max_body``: streamed to ``bodies/<sha256>`` when recording, streamed
back from the file when replaying (HTTP/1 through ``pull``, HTTP/2 as the client's
flow-control windows open), matched by size and digest, never held whole."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys

import h2.config
import h2.connection
import h2.events
import h11
import pytest

from trproxy.protocols.base import BlobUnavailable, Direction, Lookup, Reply
from trproxy.protocols.http import HttpConfig, HttpRecorder, HttpReplayer, match_key
from trproxy.store import DirBlobStore, recover

C, S = Direction.CLIENT, Direction.SERVER
LIMIT = 1000
CONFIG = HttpConfig(max_body=LIMIT)
BIG = os.urandom(300_000)  # past one 256 KiB piece
UPLOAD = os.urandom(5000)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record(store: DirBlobStore, request: bytes, response: bytes):
    rec = HttpRecorder(CONFIG, blobs=store)
    out = rec.feed(C, request) + rec.feed(S, response) + rec.feed(C, b"") + rec.feed(S, b"")
    return out


def _upload_request(body: bytes = UPLOAD) -> bytes:
    return (b"POST /upload HTTP/1.1\r\nHost: files.test\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def _download_response(body: bytes = BIG, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def _drain(replayer: HttpReplayer, first: bytes) -> tuple[bytes, int]:
    """What the proxy would send: ``first``, then every ``pull`` piece; and the largest piece."""
    out, largest = [first], 0
    while piece := replayer.pull():
        out.append(piece)
        largest = max(largest, len(piece))
    return b"".join(out), largest


def _h11_responses(wire: bytes, requests: int = 1) -> list[tuple[h11.Response, bytes, list]]:
    """Parse ``wire`` as the answers to ``requests`` GETs, with h11's client."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(wire)
    out = []
    for _ in range(requests):
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        head, body = None, b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA, f"response {len(out) + 1} is incomplete"
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((head, body, list(event.headers)))
                break
        conn.start_next_cycle()
    return out


def test_record_streams_large_bodies_to_files_named_by_digest(tmp_path) -> None:
    store = DirBlobStore(tmp_path)
    [it] = _record(store, _upload_request(), _download_response())
    assert it.request["body"] == {"file": f"bodies/{_sha(UPLOAD)}", "size": len(UPLOAD),
                                  "sha256": _sha(UPLOAD)}
    assert it.responses[0]["body"] == {"file": f"bodies/{_sha(BIG)}", "size": len(BIG),
                                       "sha256": _sha(BIG)}
    assert (tmp_path / "bodies" / _sha(BIG)).read_bytes() == BIG
    assert (tmp_path / "bodies" / _sha(UPLOAD)).read_bytes() == UPLOAD
    assert sorted(p.name for p in (tmp_path / "bodies").iterdir()) == sorted([_sha(BIG), _sha(UPLOAD)])
    # the same body recorded again is stored once
    _record(store, _upload_request(), _download_response())
    assert len(list((tmp_path / "bodies").iterdir())) == 2


def test_h1_replay_streams_the_file_and_a_live_upload_matches_by_digest(tmp_path) -> None:
    store = DirBlobStore(tmp_path)
    [it] = _record(store, _upload_request(), _download_response())
    replayer = HttpReplayer(CONFIG, blobs=store)
    [lookup] = replayer.feed(_upload_request())
    assert lookup.request["body"] == {"omitted": True, "size": len(UPLOAD), "sha256": _sha(UPLOAD),
                                      "note": lookup.request["body"]["note"]}
    assert match_key(lookup.request) == match_key(it.request)
    first = replayer.respond(lookup, it.responses)
    assert len(first) < 200, "respond gives the head; the body comes from pull"
    wire, largest = _drain(replayer, first)
    assert largest <= 256 * 1024
    [(head, body, _)] = _h11_responses(wire)
    assert head.status_code == 200 and body == BIG
    assert (b"content-length", str(len(BIG)).encode()) in list(head.headers)
    assert lookup.context.unreplayable is None


def test_h1_pipelined_responses_wait_behind_a_streamed_body(tmp_path) -> None:
    store = DirBlobStore(tmp_path)
    [it] = _record(store, b"GET /big HTTP/1.1\r\nHost: files.test\r\n\r\n", _download_response())
    small = [{"status": 200, "reason": "OK", "http_version": "HTTP/1.1",
              "headers": [["Content-Type", "text/plain"]], "body": "after"}]
    replayer = HttpReplayer(CONFIG, blobs=store)
    one, two = replayer.feed(b"GET /big HTTP/1.1\r\nHost: files.test\r\n\r\n"
                             b"GET /small HTTP/1.1\r\nHost: files.test\r\n\r\n")
    first = replayer.respond(one, it.responses)
    assert replayer.respond(two, small) == b"", "the second response must wait for the first body"
    wire, _ = _drain(replayer, first)
    (h1, b1, _), (h2_, b2, _) = _h11_responses(wire, requests=2)
    assert (h1.status_code, b1, h2_.status_code, b2) == (200, BIG, 200, b"after")


def test_file_body_with_trailers_is_sent_chunked(tmp_path) -> None:
    store = DirBlobStore(tmp_path)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(BIG[i:i + 70000]), BIG[i:i + 70000])
                       for i in range(0, len(BIG), 70000))
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
                chunked + b"0\r\nX-Checksum: abc\r\n\r\n")
    [it] = _record(store, b"GET /t HTTP/1.1\r\nHost: files.test\r\n\r\n", response)
    assert it.responses[0]["body"]["file"] == f"bodies/{_sha(BIG)}"
    replayer = HttpReplayer(CONFIG, blobs=store)
    [lookup] = replayer.feed(b"GET /t HTTP/1.1\r\nHost: files.test\r\n\r\n")
    wire, _ = _drain(replayer, replayer.respond(lookup, it.responses))
    [(head, body, trailers)] = _h11_responses(wire)
    assert body == BIG and trailers == [(b"x-checksum", b"abc")]


def test_h2_replay_streams_the_file_as_the_window_opens(tmp_path) -> None:
    store = DirBlobStore(tmp_path)
    [it] = _record(store, b"GET /big HTTP/1.1\r\nHost: files.test\r\n\r\n", _download_response())
    replayer = HttpReplayer(CONFIG, scheme="https", blobs=store)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                              (b":authority", b"files.test"), (b":path", b"/big")], end_stream=True)
    body, ended, lookups = b"", False, []
    largest = 0

    def receive(data: bytes) -> None:
        nonlocal body, ended
        for event in client.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                client.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True

    rounds = 0
    while not ended and rounds < 1000:
        rounds += 1
        for event in replayer.feed(client.data_to_send()):
            if isinstance(event, Reply):
                receive(event.data)
            else:
                lookups.append(event)
                receive(replayer.respond(event, it.responses))
        while piece := replayer.pull():
            largest = max(largest, len(piece))
            receive(piece)
    assert ended and body == BIG and len(lookups) == 1
    assert largest < 300 * 1024


def test_a_missing_body_file_is_a_reported_502(tmp_path) -> None:
    store = DirBlobStore(tmp_path)
    [it] = _record(store, b"GET /big HTTP/1.1\r\nHost: files.test\r\n\r\n", _download_response())
    (tmp_path / "bodies" / _sha(BIG)).unlink()
    replayer = HttpReplayer(CONFIG, blobs=store)
    [lookup] = replayer.feed(b"GET /big HTTP/1.1\r\nHost: files.test\r\n\r\n")
    wire, _ = _drain(replayer, replayer.respond(lookup, it.responses))
    [(head, body, _)] = _h11_responses(wire)
    assert head.status_code == 502 and b"cannot be read" in body
    assert f"bodies/{_sha(BIG)}" in lookup.context.unreplayable


def test_blob_refs_cannot_leave_the_test_set(tmp_path) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    store = DirBlobStore(tmp_path / "set")
    with pytest.raises(BlobUnavailable, match="outside the test set"):
        store.open("../secret")
    (tmp_path / "set" / "bodies").mkdir(parents=True)
    (tmp_path / "set" / "bodies" / "edited.bin").write_bytes(b"hand-made")
    reader = store.open("bodies/edited.bin")  # a hand-edited recording may name its own file
    assert reader.size == 9 and reader.read(100) == b"hand-made"
    reader.close()


def test_gzip_body_that_inflates_past_max_body_is_stored_encoded(tmp_path) -> None:
    plain = b"a" * 50_000
    packed = gzip.compress(plain)
    assert len(packed) < LIMIT
    store = DirBlobStore(tmp_path)
    [it] = _record(store, b"GET /z HTTP/1.1\r\nHost: files.test\r\n\r\n",
                   _download_response(packed, b"Content-Encoding: gzip\r\n"))
    response = it.responses[0]
    assert response["body"]["file"] == f"bodies/{_sha(packed)}" and "encoding" not in response
    replayer = HttpReplayer(CONFIG, blobs=store)
    [lookup] = replayer.feed(b"GET /z HTTP/1.1\r\nHost: files.test\r\n\r\n")
    wire, _ = _drain(replayer, replayer.respond(lookup, it.responses))
    [(head, body, _)] = _h11_responses(wire)
    assert body == packed and (b"content-encoding", b"gzip") in list(head.headers)


def test_without_a_store_or_when_writing_fails_only_the_digest_is_kept(tmp_path) -> None:
    [it] = _record(None, _upload_request(), _download_response())  # type: ignore[arg-type]
    assert it.responses[0]["body"]["omitted"] is True
    (tmp_path / "bodies").write_text("not a directory")  # mkdir and open fail
    [it] = _record(DirBlobStore(tmp_path), _upload_request(), _download_response())
    body = it.responses[0]["body"]
    assert body["omitted"] is True and body["sha256"] == _sha(BIG) and body["size"] == len(BIG)


def test_unfinished_bodies_are_removed(tmp_path) -> None:
    store = DirBlobStore(tmp_path / "test-set-0")
    rec = HttpRecorder(CONFIG, blobs=store)
    rec.feed(C, b"GET /big HTTP/1.1\r\nHost: files.test\r\n\r\n")
    rec.feed(S, _download_response()[:100_000])  # the connection dies mid-body
    tmp = list((tmp_path / "test-set-0" / "bodies").iterdir())
    assert len(tmp) == 1 and tmp[0].name.startswith(".tmp-")
    store.close()  # the end of the run
    assert list((tmp_path / "test-set-0" / "bodies").iterdir()) == []

    # a temporary file of a process that died (SIGKILL) is removed by the next start
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / "test-set-0" / "bodies" / f".tmp-{dead}-1"
    live = tmp_path / "test-set-0" / "bodies" / f".tmp-{os.getpid()}-99"
    stale.write_bytes(b"half")
    live.write_bytes(b"in use")
    done = recover(tmp_path)
    assert not stale.exists() and live.exists()
    assert any("unfinished body" in line for line in done)


def test_lookup_of_a_large_h1_request_keeps_memory_bounded(tmp_path) -> None:
    """A live upload over max_body is digested, not collected (the recorder and the
    replayer share ``BodyBuffer``)."""
    replayer = HttpReplayer(CONFIG)
    head = b"PUT /u HTTP/1.1\r\nHost: files.test\r\nContent-Length: %d\r\n\r\n" % (50 * len(BIG))
    events = replayer.feed(head)
    for _ in range(50):
        events += replayer.feed(BIG)
    [lookup] = events
    assert isinstance(lookup, Lookup)
    assert lookup.request["body"]["size"] == 50 * len(BIG)
    assert lookup.request["body"]["sha256"] == _sha(BIG * 50)
