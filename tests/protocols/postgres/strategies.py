"""Hypothesis strategies for every PostgreSQL protocol 3.0 message."""

from __future__ import annotations

from hypothesis import strategies as st

from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe

# protocol strings: any text without NUL (surrogates cannot be sent as UTF-8)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
int16 = st.integers(-(2**15), 2**15 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
fmt = st.sampled_from([0, 1])
value = st.one_of(st.none(), st.binary(max_size=40))
small = {"max_size": 6}
secret = st.binary(min_size=4, max_size=32)
nul_free = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"."))

startup = st.one_of(
    st.builds(fe.StartupMessage, st.lists(st.tuples(name, text), max_size=5).map(tuple),
              st.integers(0, 5).map(lambda minor: 3 << 16 | minor)),
    st.just(fe.SSLRequest()),
    st.just(fe.GSSENCRequest()),
    st.builds(fe.CancelRequest, int32, secret),
)

frontend = st.one_of(
    st.builds(fe.Query, text),
    st.builds(fe.Parse, text, text, st.lists(uint32, **small).map(tuple)),
    st.builds(fe.Bind, text, text, st.lists(fmt, **small).map(tuple),
              st.lists(value, **small).map(tuple), st.lists(int16, **small).map(tuple)),
    st.builds(fe.Describe, st.sampled_from("SP"), text),
    st.builds(fe.Close, st.sampled_from("SP"), text),
    st.builds(fe.Execute, text, int32),
    st.just(fe.Sync()), st.just(fe.Flush()), st.just(fe.Terminate()),
    st.builds(fe.FunctionCall, uint32, st.lists(fmt, **small).map(tuple),
              st.lists(value, **small).map(tuple), int16),
    st.builds(fe.CopyData, st.binary(max_size=60)), st.just(fe.CopyDone()),
    st.builds(fe.CopyFail, text),
    st.builds(fe.PasswordMessage, nul_free),
)

# 'p' messages whose class depends on the Authentication request before them
authenticated = st.one_of(
    st.tuples(st.just(be.AuthenticationSASL()),
              st.builds(fe.SASLInitialResponse, text, value)),
    st.tuples(st.just(be.AuthenticationSASLContinue(b"x")), st.builds(fe.SASLResponse, st.binary())),
    st.tuples(st.just(be.AuthenticationGSS()), st.builds(fe.GSSResponse, st.binary())),
    st.tuples(st.just(be.AuthenticationMD5Password(b"salt")), st.builds(fe.PasswordMessage, nul_free)),
)

field_description = st.builds(be.FieldDescription, text, uint32, int16, uint32, int16, int32, int16)
# servers never repeat a field code; the readable form (a mapping) relies on that
error_fields = st.lists(st.tuples(st.characters(min_codepoint=0x21, max_codepoint=0x7E), text),
                        max_size=8, unique_by=lambda f: f[0]).map(tuple)

backend = st.one_of(
    st.just(be.AuthenticationOk()), st.just(be.AuthenticationKerberosV5()),
    st.just(be.AuthenticationCleartextPassword()),
    st.builds(be.AuthenticationMD5Password, st.binary(min_size=4, max_size=4)),
    st.just(be.AuthenticationSCMCredential()), st.just(be.AuthenticationGSS()),
    st.builds(be.AuthenticationGSSContinue, st.binary()), st.just(be.AuthenticationSSPI()),
    st.builds(be.AuthenticationSASL, st.lists(name, max_size=3).map(tuple)),
    st.builds(be.AuthenticationSASLContinue, st.binary()),
    st.builds(be.AuthenticationSASLFinal, st.binary()),
    st.builds(be.ParameterStatus, text, text),
    st.builds(be.BackendKeyData, int32, secret),
    st.builds(be.ReadyForQuery, st.sampled_from("ITE")),
    st.builds(be.NegotiateProtocolVersion, int32, st.lists(text, **small).map(tuple)),
    st.builds(be.ErrorResponse, error_fields),
    st.builds(be.NoticeResponse, error_fields),
    st.builds(be.NotificationResponse, int32, text, text),
    st.builds(be.RowDescription, st.lists(field_description, **small).map(tuple)),
    st.builds(be.DataRow, st.lists(value, max_size=8).map(tuple)),
    st.builds(be.CommandComplete, text),
    st.just(be.EmptyQueryResponse()), st.just(be.ParseComplete()), st.just(be.BindComplete()),
    st.just(be.CloseComplete()), st.just(be.NoData()), st.just(be.PortalSuspended()),
    st.builds(be.ParameterDescription, st.lists(uint32, **small).map(tuple)),
    st.builds(be.FunctionCallResponse, value),
    st.builds(be.CopyInResponse, st.integers(0, 1), st.lists(fmt, **small).map(tuple)),
    st.builds(be.CopyOutResponse, st.integers(0, 1), st.lists(fmt, **small).map(tuple)),
    st.builds(be.CopyBothResponse, st.integers(0, 1), st.lists(fmt, **small).map(tuple)),
    st.builds(fe.CopyData, st.binary(max_size=60)), st.just(fe.CopyDone()),
)
