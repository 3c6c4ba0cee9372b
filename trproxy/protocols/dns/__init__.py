"""DNS: the app's name lookups, recorded as questions and answers (``kind: dns``).

Modules: ``codec`` (RFC 1035 messages, names with compression, the TCP length prefix) and
``readable`` (the recording format). The proxy's UDP listener (``proxy/dns.py``) uses
them: record forwards each query to the server the app asked and keeps the answer;
replay answers from the recording with no resolver at all.

Recording format (``spec`` of a ``kind: dns`` document)::

    request: {name: db.internal, type: A}
    responses:
    - rcode: NOERROR
      answers:
      - {name: db.internal, type: A, ttl: 0, data: 127.0.0.1}
"""

from .codec import DnsError, Message, Question, Record, TcpFramer, parse, serialize, tcp_frame

__all__ = ["DnsError", "Message", "Question", "Record", "TcpFramer", "parse", "serialize", "tcp_frame"]
