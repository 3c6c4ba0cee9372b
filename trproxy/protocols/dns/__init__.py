"""DNS: the app's name lookups, recorded as questions and answers (``kind: dns``).

Modules: ``codec`` (RFC 1035 messages, names with compression, the TCP length prefix),
``readable`` (the recording format) and ``dialect`` (DNS over TCP, and over UDP: each
datagram framed as a TCP message, ``Dialect.datagrams``). The proxy's datagram
listener (``proxy/datagrams.py``) uses it: record forwards each query to the server the
app asked and keeps the answer; replay answers from the recording with no resolver.

Recording format (``spec`` of a ``kind: dns`` document)::

    request: {name: db.internal, type: A}
    responses:
    - rcode: NOERROR
      answers:
      - {name: db.internal, type: A, ttl: 0, data: 127.0.0.1}
"""

from ..base import Datagrams, Dialect
from .codec import DnsError, Message, Question, Record, TcpFramer, parse, serialize, tcp_frame
from .dialect import DnsRecorder, DnsReplayer, detect, match_key

# DNS over TCP (port 53): the UDP listener and this dialect record the same documents
DIALECT = Dialect(name="dns", default_ports=(53,), detect=detect, recorder=DnsRecorder,
                  replayer=DnsReplayer, match_key=match_key,
                  datagrams=Datagrams((53,), tcp_frame, lambda message: message[2:]))

__all__ = ["DIALECT", "DnsError", "DnsRecorder", "DnsReplayer", "Message", "Question", "Record",
           "TcpFramer", "parse", "serialize", "tcp_frame"]
