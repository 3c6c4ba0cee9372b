"""Per-connection prepared statements and portals, shared by Recorder and Replayer.

Spec ("Extended Query"): Parse creates a statement (named ones live until Close or the
end of the session, the unnamed one until the next Parse of ""); Bind creates a
portal from a statement. Later messages refer to them only by name, and names differ
between runs (``__asyncpg_stmt_3__``, ``_pg3_0``, ``S_18``), so this table puts the SQL
text into the readable form of every Bind/Describe/Execute/Close - even when the Parse
was in an earlier batch - and the match key compares SQL instead of names. SQL that names
a portal the client bound (asyncpg's cursors: ``MOVE FORWARD 5 __asyncpg_portal_1e8__``)
reads ``<portal: its SQL>`` instead.

Recorder and Replayer both call ``request_item`` for every client message in order and
``learn_*`` with what the server said (recorded responses, at replay), so both produce
the same readable requests from the same client bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..base import Readable
from . import backend as be
from . import frontend as fe
from .readable import RowShape, request_item
from .sql import redact_sql


@dataclass
class Statement:
    query: str
    param_types: tuple[int, ...] = ()
    described_params: tuple[int, ...] = ()  # from ParameterDescription
    row_oids: tuple[int, ...] = ()  # from RowDescription of Describe 'S'

    def param_oids(self) -> tuple[int, ...]:
        n = max(len(self.param_types), len(self.described_params))
        out = []
        for i in range(n):
            given = self.param_types[i] if i < len(self.param_types) else 0
            described = self.described_params[i] if i < len(self.described_params) else 0
            out.append(given or described)
        return tuple(out)


@dataclass
class Portal:
    statement: Statement | None
    result_formats: tuple[int, ...] = ()
    row_oids: tuple[int, ...] = ()  # from RowDescription of Describe 'P'

    @property
    def query(self) -> str | None:
        return self.statement.query if self.statement else None

    def shape(self) -> RowShape:
        oids = self.row_oids or (self.statement.row_oids if self.statement else ())
        return RowShape(self.result_formats, oids)


@dataclass
class Names:
    statements: dict[str, Statement] = field(default_factory=dict)
    portals: dict[str, Portal] = field(default_factory=dict)

    def request_item(self, msg: Any) -> tuple[dict[str, Readable], Statement | Portal | None]:
        """Readable form of a client message, updating the tables (client order), and the
        statement or portal it refers to *now* (a pipelined client may replace the unnamed
        one before the server answers)."""
        if isinstance(msg, fe.Parse):
            parsed = self.statements[msg.name] = Statement(msg.query, msg.param_types)
            return request_item(msg), parsed
        if isinstance(msg, fe.Bind):
            stmt = self.statements.get(msg.statement)
            bound = self.portals[msg.portal] = Portal(stmt, msg.result_formats)
            return request_item(msg, stmt.query if stmt else None,
                                stmt.param_oids() if stmt else ()), bound
        if isinstance(msg, (fe.Describe, fe.Close)):
            table: dict[str, Any] = self.statements if msg.kind == "S" else self.portals
            ref = table.get(msg.name)
            if isinstance(msg, fe.Close):
                table.pop(msg.name, None)
            return request_item(msg, ref.query if ref else None), ref
        if isinstance(msg, fe.Execute):
            portal = self.portals.get(msg.portal)
            return request_item(msg, portal.query if portal else None), portal
        item = request_item(msg)
        if isinstance(msg, fe.Query) and len(self.portals) > ("" in self.portals) \
                and isinstance(item["Query"], str):
            item["Query"] = self._portals_named(item["Query"])
        return item, None

    def _portals_named(self, sql: str) -> str:
        for name, portal in self.portals.items():
            if name and name in sql:
                named = f"<portal: {redact_sql(portal.query or '')}>"
                sql = re.sub(rf'"{re.escape(name)}"|(?<![\w$]){re.escape(name)}(?![\w$])',
                             named.replace("\\", "\\\\"), sql)
        return sql


def learn_description(ref: Statement | Portal | None, params: tuple[int, ...] | None,
                      rows: be.RowDescription | None) -> None:
    """What the server answered to a Describe (ParameterDescription, RowDescription)."""
    oids = tuple(f.type_oid for f in rows.fields) if rows else ()
    if isinstance(ref, Statement):
        if params is not None:
            ref.described_params = params
        ref.row_oids = oids
    elif isinstance(ref, Portal):
        ref.row_oids = oids


def shape_of(ref: Statement | Portal | None) -> RowShape:
    """How to read the DataRows an Execute of this portal returns."""
    return ref.shape() if isinstance(ref, Portal) else RowShape()
