"""The startup as the server answers it: settings the client asked for, reported back.

A server applies the run-time parameters of the StartupMessage (``client_encoding``,
``DateStyle``, ``application_name``, ``TimeZone``...) and ``-c name=value`` / ``--name=value``
in ``options``, then reports every GUC_REPORT setting in ParameterStatus. At replay the
recorded reports are kept, but a setting the live client asked for is reported with the
live value, in the form the server would use (``utf-8`` -> ``UTF8``, ``iso`` ->
``ISO, MDY``, ``on``/``off``): clients check these (psycopg decodes with the reported
encoding, asyncpg insists on UTF8). Names compare case-insensitively, as GUC names do.
"""

from __future__ import annotations

import re

from . import backend as be

_NOT_SETTINGS = {"user", "database", "options", "replication"}

# PostgreSQL's encoding names (``pg_enc2name_tbl``) and the aliases of ``pg_encname_tbl``
# that are not just a spelling of one (compared after ``_clean``).
_ENCODINGS = ("SQL_ASCII EUC_JP EUC_CN EUC_KR EUC_TW EUC_JIS_2004 UTF8 MULE_INTERNAL LATIN1 "
              "LATIN2 LATIN3 LATIN4 LATIN5 LATIN6 LATIN7 LATIN8 LATIN9 LATIN10 WIN1256 WIN1258 "
              "WIN866 WIN874 KOI8R WIN1251 WIN1252 ISO_8859_5 ISO_8859_6 ISO_8859_7 ISO_8859_8 "
              "WIN1250 WIN1253 WIN1254 WIN1255 WIN1257 KOI8U SJIS BIG5 GBK UHC GB18030 JOHAB "
              "SHIFT_JIS_2004").split()
_ALIASES = {"unicode": "UTF8", "iso88591": "LATIN1", "iso88592": "LATIN2", "iso88593": "LATIN3",
            "iso88594": "LATIN4", "iso88599": "LATIN5", "iso885910": "LATIN6",
            "iso885913": "LATIN7", "iso885914": "LATIN8", "iso885915": "LATIN9",
            "iso885916": "LATIN10", "koi8": "KOI8R", "shiftjis": "SJIS", "mskanji": "SJIS",
            "win932": "SJIS", "win936": "GBK", "win949": "UHC", "win950": "BIG5", "win": "WIN1251",
            "alt": "WIN866", "abc": "WIN1258", "tcvn": "WIN1258", "tcvn5712": "WIN1258",
            "vscii": "WIN1258", **{f"windows{n}": f"WIN{n}" for n in
                                   (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)}}
_BOOLEANS = {"on": "on", "true": "on", "yes": "on", "1": "on", "off": "off", "false": "off",
             "no": "off", "0": "off"}
_DATE_STYLES = {"ISO": "ISO", "SQL": "SQL", "POSTGRES": "Postgres", "GERMAN": "German"}
_DATE_ORDERS = {"DMY": "DMY", "EURO": "DMY", "EUROPEAN": "DMY", "MDY": "MDY", "US": "MDY",
                "NONEURO": "MDY", "NONEUROPEAN": "MDY", "YMD": "YMD"}


def _clean(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_CLEAN = {_clean(n): n for n in _ENCODINGS} | _ALIASES


def _split_options(options: str) -> list[str]:
    """``options`` split on unescaped whitespace, backslashes removed (``pg_split_opts``)."""
    words, word, escaped, started = [], [], False, False
    for ch in options:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = started = True
        elif ch.isspace():
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
            started = True
    if started:
        words.append("".join(word))
    return words


def live_settings(params: dict[str, str]) -> dict[str, str]:
    """Settings a StartupMessage asks for, by lower-cased name (``options`` included)."""
    out = {k.lower(): v for k, v in params.items() if k.lower() not in _NOT_SETTINGS}
    words = _split_options(params.get("options", ""))
    i = 0
    while i < len(words):
        word = words[i]
        setting = None
        if word == "-c" and i + 1 < len(words):
            setting, i = words[i + 1], i + 1
        elif word.startswith("-c") and len(word) > 2:
            setting = word[2:]
        elif word.startswith("--"):
            setting = word[2:]
        if setting and "=" in setting:
            name, _, value = setting.partition("=")
            out[name.replace("-", "_").lower()] = value
        i += 1
    return out


def reported(name: str, live: str, recorded: str, version: int = 15) -> str:
    """What a server of major ``version`` reports for ``name`` set to ``live``;
    ``recorded`` is what it reported in the recording (kept when both mean the same)."""
    key = name.lower()
    if key == "client_encoding":
        canonical = _BY_CLEAN.get(_clean(live))
        return canonical or (recorded if _clean(live) == _clean(recorded) else live)
    if key == "datestyle":
        return _date_style(live, recorded)
    if key == "intervalstyle":
        return live.lower()
    if key == "application_name":  # printable ASCII only (pg_clean_ascii)
        return "".join(chr(b) if 32 <= b <= 126 else ("?" if version < 16 else f"\\x{b:02x}")
                       for b in live.encode("utf-8", "surrogateescape"))
    if live.lower() in _BOOLEANS and recorded in ("on", "off"):
        return _BOOLEANS[live.lower()]
    if live.lower() == recorded.lower():
        return recorded  # TimeZone utc -> UTC: the server reports the zone's own spelling
    return live


def _date_style(live: str, recorded: str) -> str:
    style, _, order = (p.strip() for p in recorded.partition(","))
    have_order = False
    for token in re.split(r"[\s,]+", live.strip().upper()):
        if token in _DATE_STYLES:
            style = _DATE_STYLES[token]
            if token == "GERMAN" and not have_order:
                order = "DMY"  # German implies DMY unless an order is given (datestyle.c)
        elif token in _DATE_ORDERS:
            order, have_order = _DATE_ORDERS[token], True
    return f"{style}, {order}" if order else style


def reflect(statuses: list[be.ParameterStatus], settings: dict[str, str]) -> list[be.ParameterStatus]:
    """The recorded ParameterStatus set with the live client's settings reported."""
    if not settings:
        return statuses
    version = next((s.value for s in statuses if s.name == "server_version"), "")
    major = int(m.group(0)) if (m := re.match(r"\d+", version)) else 15
    out = []
    for status in statuses:
        live = settings.get(status.name.lower())
        out.append(status if live is None else
                   be.ParameterStatus(status.name, reported(status.name, live, status.value, major)))
    return out
