"""The small SQL lexer both database dialects' text helpers stand on (no parser).

Matching compares SQL whitespace-insensitively and sorts statements by their first word
(``postgres/sql.py``, ``mysql/sql.py``). Both need the same things of the text: its
tokens, a normalized form, its top-level statements. They differ only in what a literal
or a comment looks like, which each gives as a token pattern with the groups ``ws``,
``quoted``, ``comment``, ``semi``, ``other`` (and ``dollar`` for Postgres's
``$tag$...$tag$`` strings).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

# ``x IN (<literal>, ...)``: a set, whose order apps take from a hash set (Django's
# ``create_permissions`` joins a Python set, ordered by the process's hash seed)
_LITERAL = r"(?:'(?:[^']|'')*'|-?\d+(?:\.\d+)?)"
_IN_LIST = re.compile(rf"(\bIN\s*\(\s*)({_LITERAL}(?:\s*,\s*{_LITERAL})+)(\s*\))", re.I)
_ITEM = re.compile(_LITERAL)


def sort_in_lists(sql: str) -> str:
    """``sql`` (normalized) with the items of each ``IN (...)`` list of literals sorted:
    the same set of values matches in any order, as the server treats it."""
    if "(" not in sql:
        return sql
    return _IN_LIST.sub(lambda m: m.group(1) + ", ".join(sorted(_ITEM.findall(m.group(2)))) + m.group(3), sql)


class SqlLexer:
    """``token``: the pattern above (its last alternative must match any character);
    ``special``: finds anything the lexer must see (quotes, comments), so plain text
    takes a fast path."""

    def __init__(self, token: re.Pattern[str], special: re.Pattern[str]) -> None:
        self.token, self.special = token, special
        # applications repeat their statements: scan each text once
        self.normalize = lru_cache(maxsize=4096)(self._normalize)

    def scan(self, sql: str) -> Iterator[tuple[str, str]]:
        """(kind, text) tokens: 'ws', 'quoted', 'comment', 'semi' or 'other'."""
        pos, n = 0, len(sql)
        while pos < n:
            m = self.token.match(sql, pos)
            assert m is not None and m.lastgroup is not None  # the last alternative matches anything
            kind, end = m.lastgroup, m.end()
            if kind == "dollar":
                if pos > 0 and (sql[pos - 1].isalnum() or sql[pos - 1] == "_"):
                    kind = "other"  # $1 parameters and identifiers with $ are not quotes
                else:
                    close = sql.find(m.group(0), end)
                    end, kind = (n if close < 0 else close + len(m.group(0))), "quoted"
            yield kind, sql[pos:end]
            pos = end

    def _normalize(self, sql: str) -> str:
        """Runs of whitespace outside literals become one space; leading and trailing
        whitespace and trailing semicolons go; literals stay byte for byte."""
        if not self.special.search(sql):  # nothing quoted or commented: plain folding
            text = " ".join(sql.split())
        else:
            text = "".join(" " if kind == "ws" else tok for kind, tok in self.scan(sql)).strip()
        while text.endswith(";"):
            text = text[:-1].rstrip()
        return text

    def split_statements(self, sql: str) -> list[str]:
        """The top-level statements (a simple query may hold several), comments dropped."""
        stmts: list[str] = []
        cur: list[str] = []
        for kind, tok in self.scan(sql):
            if kind == "semi":
                stmts.append("".join(cur))
                cur = []
            elif kind != "comment":
                cur.append(tok)
        stmts.append("".join(cur))
        return [s.strip() for s in stmts if s.strip()]

    def strip_comments(self, sql: str) -> str:
        return "".join(tok for kind, tok in self.scan(sql) if kind != "comment").strip()

    def summarize(self, sql: str, width: int) -> str:
        text = self.normalize(sql)
        return text if len(text) <= width else text[:width - 3] + "..."
