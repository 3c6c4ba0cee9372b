"""Startup parameters: the live client's settings are reported back as a server would."""

from __future__ import annotations

import pytest

from tests.protocols.postgres.build import HANDSHAKE, STARTUP, Replay, client, record, server
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.startup import live_settings, reported

RECORDED = [
    be.AuthenticationOk(), be.ParameterStatus("application_name", "recorder"),
    be.ParameterStatus("client_encoding", "UTF8"), be.ParameterStatus("DateStyle", "ISO, MDY"),
    be.ParameterStatus("IntervalStyle", "postgres"), be.ParameterStatus("TimeZone", "Etc/UTC"),
    be.ParameterStatus("standard_conforming_strings", "on"), be.ParameterStatus("server_version", "15.4"),
    be.ParameterStatus("search_path", '"$user", public'),
    be.BackendKeyData(1, b"\0\0\0\1"), be.ReadyForQuery("I")]


def statuses(answer: list) -> dict[str, str]:
    return {m.name: m.value for m in answer if isinstance(m, be.ParameterStatus)}


def login_with(**params: str) -> dict[str, str]:
    recorded = record(client(STARTUP), server(*RECORDED))
    live = fe.StartupMessage((("user", "alice"), ("database", "shop"), *params.items()))
    return statuses(Replay(recorded).send(live))


def test_settings_of_the_live_startup_are_reported():
    got = login_with(application_name="live-app", client_encoding="utf-8", datestyle="iso, dmy",
                     IntervalStyle="ISO_8601", TimeZone="etc/utc", standard_conforming_strings="true")
    assert got == {"application_name": "live-app", "client_encoding": "UTF8", "DateStyle": "ISO, DMY",
                   "IntervalStyle": "iso_8601", "TimeZone": "Etc/UTC",
                   "standard_conforming_strings": "on", "server_version": "15.4",
                   "search_path": '"$user", public'}


def test_options_set_settings_too():
    got = login_with(options=r"-c DateStyle=German --search-path=app\ schema -cTimeZone=Europe/Paris")
    assert got["DateStyle"] == "German, DMY"
    assert got["search_path"] == "app schema" and got["TimeZone"] == "Europe/Paris"
    assert got["application_name"] == "recorder"  # not asked for: as recorded


def test_settings_not_asked_for_are_reported_as_recorded():
    assert login_with() == statuses(RECORDED)


def test_a_synthesized_startup_reports_the_live_settings():
    answer = Replay([]).send(fe.StartupMessage((("user", "bob"), ("client_encoding", "latin1"),
                                                ("application_name", "x"))))
    got = statuses(answer)
    assert got["client_encoding"] == "LATIN1" and got["application_name"] == "x"
    assert got["session_authorization"] == "bob"


@pytest.mark.parametrize(("name", "live", "recorded", "expected"), [
    ("client_encoding", "UNICODE", "UTF8", "UTF8"),
    ("client_encoding", "iso-8859-5", "UTF8", "ISO_8859_5"),
    ("client_encoding", "windows-1252", "UTF8", "WIN1252"),
    ("client_encoding", "no-such", "UTF8", "no-such"),
    ("DateStyle", "SQL", "ISO, MDY", "SQL, MDY"),
    ("DateStyle", "ymd", "ISO, MDY", "ISO, YMD"),
    ("DateStyle", "German, US", "ISO, MDY", "German, MDY"),
    ("DateStyle", "postgres, european", "ISO, MDY", "Postgres, DMY"),
    ("application_name", "caf\u00e9\tx", "", "caf??" + "?x"),
    ("default_transaction_read_only", "yes", "off", "on"),
    ("TimeZone", "UTC", "utc", "utc"),
    ("TimeZone", "America/New_York", "UTC", "America/New_York"),
])
def test_reported_values(name, live, recorded, expected):
    assert reported(name, live, recorded) == expected


def test_application_name_escapes_from_postgres_16():
    assert reported("application_name", "caf\u00e9", "", 16) == r"caf\xc3\xa9"


def test_live_settings_reads_options_like_the_server():
    params = {"user": "u", "database": "d", "replication": "false", "Extra_Float_Digits": "3",
              "options": r"-c statement_timeout=5s  -c  lock_timeout=1s --work-mem=4MB -c a\ b=c\\d -x"}
    assert live_settings(params) == {"extra_float_digits": "3", "statement_timeout": "5s",
                                     "lock_timeout": "1s", "work_mem": "4MB", "a b": "c\\d"}


def test_the_recorded_set_is_unchanged_without_live_settings():
    recorded = record(client(STARTUP), server(*HANDSHAKE))
    replay = Replay(recorded)
    assert statuses(replay.send(fe.StartupMessage((("user", "alice"), ("database", "shop"))))) == statuses(HANDSHAKE)
