"""A PostgREST-compatible stand-in for tests (test support only, never deployed).

It serves the subset supabase-py sends — ``/rest/v1/<table>`` (GET with ``select``, ``eq/neq/lt/lte/gt/gte/in/
is/like/ilike`` filters, ``order``, ``limit``, ``offset``; POST insert/upsert with ``columns``, ``on_conflict``
and ``Prefer: return=…,resolution=…,missing=default``; PATCH and DELETE with filters; ``Content-Range``
counts) and ``/rest/v1/rpc/<fn>`` — by running real SQL on PostgreSQL, one connection and one transaction per
request, as PostgREST does. Errors are answered like PostgREST (status from the SQLSTATE, body with ``code``,
``message``, ``details``, ``hint``) and, for a wrong or missing ``apikey``, like Supabase's API gateway (401
with ``message`` and ``hint`` only).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql

__all__ = ["PostgrestStandIn", "http_status_for_sqlstate"]

_OPERATORS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "like": "LIKE",
              "ilike": "ILIKE"}
_RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}


def http_status_for_sqlstate(code: str) -> int:
    """PostgREST's documented SQLSTATE → HTTP status table (docs.postgrest.org, references/errors)."""
    exact = {"23503": 409, "23505": 409, "25006": 405, "53400": 500, "P0001": 400, "42883": 404, "42P01": 404,
             "42P17": 500, "42501": 403}
    if code in exact:
        return exact[code]
    prefixes = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
                "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
                "P0": 500, "XX": 500}
    return prefixes.get(code[:2], 400)


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, code: str | None, message: str, details: str | None = None, hint: str | None = None) -> _Reply:
    return _Reply(status, {"code": code, "details": details, "hint": hint, "message": message})


class PostgrestStandIn:
    """Serve PostgREST's API over ``conninfo`` on 127.0.0.1; ``url`` is what ``create_client`` takes."""

    def __init__(self, conninfo: str, *, service_role_key: str) -> None:
        self.conninfo = conninfo
        self.service_role_key = service_role_key
        self.requests: list[tuple[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def do_GET(self) -> None:
                stand_in._handle(self, "GET")

            def do_POST(self) -> None:
                stand_in._handle(self, "POST")

            def do_PATCH(self) -> None:
                stand_in._handle(self, "PATCH")

            def do_DELETE(self) -> None:
                stand_in._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="postgrest-stand-in", daemon=True)

    @property
    def url(self) -> str:
        """Base URL (the Supabase project URL; the API lives under /rest/v1)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PostgrestStandIn:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    # --- request handling
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        self.requests.append((method, handler.path))
        try:
            self._check_key(handler)
            if not parts.path.startswith("/rest/v1/"):
                raise _Reply(404, {"message": "no Route matched with those values"})  # noqa: TRY301
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            prefer = {
                key.strip(): value.strip()
                for key, _, value in (item.partition("=") for item in
                                      ",".join(handler.headers.get_all("Prefer") or []).split(",") if item)
            }
            query = parse_qsl(parts.query, keep_blank_values=True)
            name = parts.path[len("/rest/v1/"):]
            if name.startswith("rpc/"):
                if method not in ("POST", "GET"):
                    raise _error(405, "PGRST101", "Only GET and POST verbs are allowed for RPC")
                reply = self._rpc(name[4:], body if isinstance(body, dict) else dict(query))
            else:
                reply = self._table(method, name, query, body, prefer)
        except _Reply as done:
            reply = done
        except json.JSONDecodeError as exc:
            reply = _error(400, "PGRST102", "Empty or invalid json", str(exc))
        self._send(handler, reply)

    def _check_key(self, handler: BaseHTTPRequestHandler) -> None:
        # Supabase's gateway checks the apikey before PostgREST sees the request; its 401 body has no code.
        key = handler.headers.get("apikey")
        if not key:
            raise _Reply(401, {"message": "No API key found in request",
                               "hint": "No `apikey` request header or url param was found."})
        if key != self.service_role_key:
            raise _Reply(401, {"message": "Invalid API key",
                               "hint": "Double check your Supabase `anon` or `service_role` API key."})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        handler.send_response(reply.status)
        if reply.body is not None:
            handler.send_header("Content-Type", "application/json; charset=utf-8")
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _run(self, query: sql.Composable, params: list[Any]) -> Any:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise _error(503, "PGRST000", "Database connection error. Retrying the connection.",
                         str(exc).strip()) from exc
        try:
            with conn:
                row = conn.execute(query, params).fetchone()
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise _error(503, "PGRST001", "Database client error. Retrying the connection.",
                             str(exc).strip()) from exc
            raise _error(http_status_for_sqlstate(exc.sqlstate), exc.sqlstate,
                         exc.diag.message_primary or str(exc), exc.diag.message_detail,
                         exc.diag.message_hint) from exc
        return None if row is None else row[0]

    # --- RPC
    def _rpc(self, function: str, args: dict[str, Any]) -> _Reply:
        found = self._run(
            sql.SQL(
                "SELECT jsonb_agg(jsonb_build_object('names', coalesce(p.proargnames, '{}'),"
                " 'types', (SELECT coalesce(jsonb_agg(format_type(t, NULL) ORDER BY o), '[]')"
                "           FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, o)),"
                " 'retset', p.proretset))"
                " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public' AND p.proname = %s"
            ),
            [function],
        ) or []
        candidates = [c for c in found if set(args) == set(c["names"][: len(c["types"])])]
        if not candidates:
            signature = ", ".join(sorted(args))
            raise _error(404, "PGRST202",
                         f"Could not find the function public.{function}({signature}) in the schema cache",
                         None, "Perhaps you meant to call a different function, or reload the schema cache.")
        target = candidates[0]
        named = []
        values = []
        for arg_name, arg_type in zip(target["names"], target["types"], strict=False):
            value = args[arg_name]
            named.append(sql.SQL("{} => %s::{}").format(sql.Identifier(arg_name), sql.SQL(arg_type)))
            if arg_type in ("json", "jsonb"):
                values.append(json.dumps(value))
            else:
                values.append(None if value is None else value if isinstance(value, str) else json.dumps(value))
        call = sql.SQL("public.{}({})").format(sql.Identifier(function), sql.SQL(", ").join(named))
        if target["retset"]:
            query = sql.SQL("SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) FROM {} r").format(call)
        else:
            query = sql.SQL("SELECT to_jsonb({})").format(call)
        return _Reply(200, self._run(query, values))

    # --- tables
    def _table(self, method: str, table: str, query: list[tuple[str, str]], body: Any,
               prefer: dict[str, str]) -> _Reply:
        exists = self._run(sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), [f"public.{table}"])
        if not exists:
            raise _error(404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache")
        params = dict(query)
        ident = sql.Identifier("public", table)
        where, values = self._filters(query)
        representation = prefer.get("return", "minimal" if method != "GET" else "representation") == "representation"
        if method == "GET":
            columns = params.get("select", "*")
            cols = sql.SQL("*") if columns == "*" else sql.SQL(", ").join(
                sql.Identifier(c.strip()) for c in columns.split(","))
            inner = sql.SQL("SELECT {} FROM {}{}{}{}").format(cols, ident, where, self._order(params.get("order")),
                                                            self._limit(params))
            rows = self._run(sql.SQL("SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM ({}) t").format(inner),
                             values)
            headers = {}
            if "count" in prefer:
                total = self._run(sql.SQL("SELECT count(*) FROM {}{}").format(ident, where), values)
                headers["Content-Range"] = f"0-{len(rows) - 1}/{total}" if rows else f"*/{total}"
            return _Reply(200, rows, headers)
        if method == "POST":
            rows_in = body if isinstance(body, list) else [body]
            keys = ([c.strip().strip('"') for c in params["columns"].split(",")] if "columns" in params
                    else list(dict.fromkeys(k for row in rows_in for k in row)))
            col_list = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
            statement = sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM jsonb_populate_recordset(NULL::{}, %s::jsonb)"
            ).format(ident, col_list, col_list, ident)
            if "on_conflict" in params or "resolution" in prefer:
                conflict_columns = params.get("on_conflict", "id").split(",")
                target = sql.SQL(", ").join(sql.Identifier(c.strip()) for c in conflict_columns)
                if prefer.get("resolution") == "ignore-duplicates":
                    statement += sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(target)
                else:
                    statement += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(target, sql.SQL(", ").join(
                        sql.SQL("{} = excluded.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in keys))
            result = self._returning(statement, [json.dumps(rows_in)])
            return self._write_reply(201, result, representation)
        if method == "PATCH":
            keys = list(body)
            col_list = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
            # A one-column SET cannot use the row form "(a) = (SELECT ...)" on every server version.
            target_cols = sql.SQL("({})").format(col_list) if len(keys) > 1 else col_list
            statement = sql.SQL(
                "UPDATE {} SET {} = (SELECT {} FROM jsonb_populate_record(NULL::{}, %s::jsonb)){}"
            ).format(ident, target_cols, col_list, ident, where)
            result = self._returning(statement, [json.dumps(body), *values])
            return self._write_reply(200, result, representation)
        if method == "DELETE":
            result = self._returning(sql.SQL("DELETE FROM {}{}").format(ident, where), values)
            return self._write_reply(200, result, representation)
        raise _error(405, "PGRST117", f"Unsupported HTTP method: {method}")

    def _returning(self, statement: sql.Composable, values: list[Any]) -> Any:
        query = sql.SQL("WITH w AS ({} RETURNING *) SELECT coalesce(jsonb_agg(to_jsonb(w)), '[]'::jsonb) FROM w")
        return self._run(query.format(statement), values)

    @staticmethod
    def _write_reply(status: int, rows: list[Any], representation: bool) -> _Reply:
        if representation:
            return _Reply(status, rows, {"Preference-Applied": "return=representation"})
        return _Reply(status if status == 201 else 204, None,
                      {"Content-Range": f"*/{len(rows)}", "Preference-Applied": "return=minimal"})

    @staticmethod
    def _filters(query: list[tuple[str, str]]) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        values: list[Any] = []
        for column, expression in query:
            if column in _RESERVED:
                continue
            op, _, value = expression.partition(".")
            col = sql.Identifier(column)
            if op in _OPERATORS:
                clauses.append(sql.SQL("{} {} %s").format(col, sql.SQL(_OPERATORS[op])))
                values.append(value.replace("*", "%") if op in ("like", "ilike") else value)
            elif op == "in":
                items = [item.strip().strip('"') for item in value.strip("()").split(",") if item.strip()]
                clauses.append(sql.SQL("{}::text = ANY(%s)").format(col))
                values.append(items)
            elif op == "is" and value in ("null", "true", "false", "unknown"):
                clauses.append(sql.SQL("{} IS {}").format(col, sql.SQL(value.upper())))
            else:
                raise _error(400, "PGRST100", f'"failed to parse filter ({expression})" (line 1, column 1)')
        if not clauses:
            return sql.SQL(""), values
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), values

    @staticmethod
    def _order(order: str | None) -> sql.Composable:
        if not order:
            return sql.SQL("")
        terms = []
        for term in order.split(","):
            column, *modifiers = term.split(".")
            direction = "DESC" if "desc" in modifiers else "ASC"
            nulls = " NULLS FIRST" if "nullsfirst" in modifiers else " NULLS LAST" if "nullslast" in modifiers else ""
            terms.append(sql.SQL("{} {}{}").format(sql.Identifier(column), sql.SQL(direction), sql.SQL(nulls)))
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)

    @staticmethod
    def _limit(params: dict[str, str]) -> sql.Composable:
        text = ""
        if "limit" in params:
            text += f" LIMIT {int(params['limit'])}"
        if "offset" in params:
            text += f" OFFSET {int(params['offset'])}"
        return sql.SQL(text)  # type: ignore[arg-type]
