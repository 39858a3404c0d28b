"""Which SQL a caller may run on the store, decided from the engine's own parse of it.

A keyword blocklist can be bypassed by spelling (``FILE /**/ (``, `` `file` ``, ``"fi\\x6ce"``);
the engine's parser cannot, because it is what runs the query. :func:`guard` asks the engine
for ``EXPLAIN AST <sql>`` (one row per node: indentation, kind, name, ``(children N)``), and
allows only:

- one SELECT (``SelectWithUnionQuery``; WITH, subqueries, joins, UNION/INTERSECT/EXCEPT are
  fine) with no ``INTO OUTFILE``, no ``FORMAT`` and no ``SETTINGS`` clause anywhere;
- whose every table reference (``FROM``/``JOIN`` and the table right of ``IN``) is a
  MergeTree table of the store's own database, bare or as ``<db>.<table>``, or a bare name
  that is no object of that database (a CTE: it reads only what its own subquery reads,
  which is checked like everything else; an unknown name fails in the engine);
- with no table function at all (``file()``, ``url()``, ``numbers()``, ``remote()``,
  ``view()``, ``merge()``, chdb's ``python()``, ...: anything under ``FROM`` that is not a
  table or a subquery), and none of their names called as a function either (``x IN
  file(...)`` and the scalar ``file()`` read host files even with ``readonly=1``);
- with no function of :data:`DENIED_FUNCTIONS` / :data:`DENIED_PREFIXES` (reaching outside
  the rows of the query, see there), no alias of one, no user-defined function, and no node
  kind outside :data:`NODE_KINDS`:
  the dump prints only a node's ``children``, and a kind that keeps a sub-expression
  elsewhere would hide it (``SELECT COLUMNS('x') APPLY(file) FROM t`` calls ``file()``
  and its dump shows a bare ``ColumnsApplyTransformer``), so unknown kinds are refused.

The dump is text, and identifiers may contain newlines; the rows are parsed strictly (each
child one space deeper, exactly the announced number of children, nothing left over), so
forged rows inside an alias make the parse fail and the query is refused.

:func:`guard` first has the engine's formatter rewrite the query on one line (:func:`canonical`:
one statement, or refused before anything runs), then checks and returns that text with the
store tables it reads; for tenant SQL it also refuses PREWHERE and virtual columns (see there). A top-level
UNION/INTERSECT/EXCEPT is returned wrapped as ``SELECT * FROM (<sql>)``, because a SETTINGS
clause appended to it would belong to its last SELECT only (the engine then skipped
``max_result_rows``: measured); the wrapped text is parsed and checked again, so what
runs is exactly what was checked. The caller runs it under ``readonly=1`` and the limits.

>>> catalog = Catalog("m1", frozenset({"metric_points"}), frozenset({"metric_points"}), frozenset({"file", "numbers"}))
>>> check([
...     "SelectWithUnionQuery (children 2)",
...     " ExpressionList (children 1)",
...     "  SelectQuery (children 2)",
...     "   ExpressionList (children 1)",
...     "    Asterisk",
...     "   TablesInSelectQuery (children 1)",
...     "    TablesInSelectQueryElement (children 1)",
...     "     TableExpression (children 1)",
...     "      Function file (children 1)",
...     "       ExpressionList (children 1)",
...     "        Literal '/etc/passwd'",
...     " Identifier Native",
... ], catalog)
Traceback (most recent call last):
...
sinks.sql_guard.QueryRefused: table function file() is not allowed: only the store's own tables can be queried
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client


class QueryRefused(ValueError):
    """The query is not allowed here; the message says why."""


#: Functions that reach outside the rows of the query, lower case. Refused in any position.
DENIED_FUNCTIONS = frozenset({
    # read files or the network of the host (the scalar file() works even under readonly=1)
    "file", "url", "urlcluster", "s3", "s3cluster", "gcs", "hdfs", "remote", "remotesecure", "cluster",
    "clusterallreplicas", "mysql", "postgresql", "mongodb", "redis", "sqlite", "odbc", "jdbc", "input",
    "executable", "python", "merge", "view", "viewifpermitted", "viewexplain", "loop", "fuzzquery", "fuzzjson",
    # read other tables or dictionaries by a name given as a string, around the table checks
    "joinget", "joingetornull", "hascolumnintable", "getsubcolumnfromtable", "catboostevaluate",
    "naivebayesclassifier", "modelevaluate",
    # the server and its configuration: host names, ports, settings, users, macros, certificates
    "hostname", "fqdn", "tcpport", "getserverport", "getmacro", "getsetting", "getsettingordefault",
    "getserversetting", "getmergetreesetting", "getclienthttpheader", "getoskernelversion", "serveruuid",
    "showcertificate", "currentuser", "user", "current_user", "session_user", "authenticateduser", "authuser",
    "fullhostname", "currentrequesturl", "pggetuserbyid", "pg_get_userbyid", "pgtableisvisible",
    "pg_table_is_visible", "currentprofiles", "enabledprofiles",
    "defaultprofiles", "currentroles", "enabledroles", "defaultroles", "displayname", "globalvariable",
    "zookeepersessionuptime", "uptime", "buildid", "filesystemavailable", "filesystemcapacity",
    "filesystemunreserved", "filesystemfree",
    # side effects or stalls: the server log, Keeper, sleeping threads, crashes (introspection)
    "logtrace", "generateserialid", "sleep", "sleepeachrow", "trap", "addresstoline",
    "addresstolinewithinlines", "addresstosymbol", "demangle",
})
#: Name prefixes of functions refused for the same reasons (lower case): every dictGet*/dictHas
#: reads a dictionary by name, ``__`` marks the engine's internal functions, the others are the
#: families of the table functions above and the embedded geo dictionaries. Besides these, a name
#: is refused if it, or the function it is an alias of, is a table function or user-defined
#: (its code is the server's configuration, unseen here): see :func:`load_catalog`.
DENIED_PREFIXES = ("dict", "__", "file", "s3", "azure", "hdfs", "iceberg", "deltalake", "hudi", "paimon", "remote",
                   "mysql", "postgres", "executable", "region", "mergetree", "prometheus")
#: Names that are both a table function and an ordinary scalar function, and harmless as the latter.
SCALAR_TOO = frozenset({"format"})
#: Node kinds whose every sub-expression the dump shows; anything else is refused.
NODE_KINDS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList", "WithElement",
    "Subquery", "TablesInSelectQuery", "TablesInSelectQueryElement", "TableExpression", "TableIdentifier",
    "TableJoin", "ArrayJoin", "SampleRatio", "Identifier", "Literal", "Function", "Asterisk", "QualifiedAsterisk",
    "ColumnsListMatcher", "ColumnsRegexpMatcher", "QualifiedColumnsListMatcher", "QualifiedColumnsRegexpMatcher",
    "ColumnsTransformerList", "ColumnsExceptTransformer", "ColumnsReplaceTransformer",
    "ColumnsReplaceTransformer::Replacement", "OrderByElement", "InterpolateElement", "WindowDefinition",
    "WindowListElement",
})
#: Functions whose second argument may name a table (``x IN t``).
IN_FUNCTIONS = frozenset({"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin",
                          "globalnotnullin"})
_ROW = re.compile(r"(?P<indent> *)(?P<kind>[A-Za-z_:]+)(?: (?P<text>.*))?")
_CHILDREN = re.compile(r"(?P<row>.*) \(children (?P<n>[1-9][0-9]*)\)")


@dataclass(frozen=True)
class Catalog:
    """What a query may name: the store's database, its MergeTree tables, every object in it
    (tables, views, dictionaries), the engine's table functions (lower case), and per table
    the expression holding a row's tenant (tables without one are absent)."""

    database: str
    tables: frozenset[str]
    objects: frozenset[str]
    table_functions: frozenset[str]
    tenant_columns: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # function alias -> function, lower case
    user_functions: frozenset[str] = frozenset()  # lower case

    def denies(self, function: str) -> bool:
        """Whether calling ``function`` (any case, or an alias of it) is refused.

        >>> catalog = Catalog("m1", frozenset(), frozenset(), frozenset({"numbers"}), aliases={"myhost": "hostname"})
        >>> [catalog.denies(f) for f in ("MyHost", "NUMBERS", "dictGetOrNull", "format", "lower")]
        [True, True, True, False, False]
        """
        names = {function.lower(), self.aliases.get(function.lower(), function.lower())}
        return any(name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES) or name in self.user_functions
                   or (name in self.table_functions and name not in SCALAR_TOO) for name in names)


#: Where a table keeps a row's tenant, by the column it has: ``tenant`` in the pipeline's tables,
#: ``Tenant`` in the OTel tables (the Collector's schema keeps it as the resource attribute
#: ``tenant``, from which schemas/ddl/070_tenant_keys.sql materialises the column).
TENANT_COLUMNS = {"tenant": "tenant", "Tenant": "Tenant"}


def tenant_condition(column: str, tenant: str) -> str:
    """The condition keeping ``tenant``'s rows of a table that holds a row's tenant in ``column``.

    >>> tenant_condition("Tenant", "acme")
    "Tenant = 'acme'"
    """
    return f"{column} = {quote(tenant)}"


#: How long the engine's list of functions is reused (reading system.functions takes ~15 ms).
FUNCTIONS_SECONDS = 60.0
_functions_cache: dict[str, tuple[float, list[tuple[str, str]]]] = {}


def _functions(client: Client) -> list[tuple[str, str]]:
    """``(name, 'table' | 'user' | the function it is an alias of)`` of the engine's functions, lower case."""
    now = time.monotonic()
    cached = _functions_cache.get(client.uri)
    if cached is None or cached[0] < now:
        rows = client.query("SELECT lower(name), 'table' FROM system.table_functions UNION ALL "
                            "SELECT lower(name), 'user' FROM system.functions WHERE origin != 'System' UNION ALL "
                            "SELECT lower(name), lower(alias_to) FROM system.functions WHERE alias_to != ''").result_rows
        cached = _functions_cache[client.uri] = (now + FUNCTIONS_SECONDS, [tuple(row) for row in rows])
    return cached[1]


def load_catalog(client: Client, database: str) -> Catalog:
    """The :class:`Catalog` of ``database`` as the engine has it now."""
    db = {"db": database}
    rows = client.query("SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters=db).result_rows
    functions = _functions(client)
    columns = client.query("SELECT table, groupArray(name) FROM system.columns WHERE database = {db:String} "
                           "AND name IN {names:Array(String)} GROUP BY table",
                           parameters={**db, "names": list(TENANT_COLUMNS)}).result_rows
    tenant_columns = {table: next(TENANT_COLUMNS[c] for c in TENANT_COLUMNS if c in names) for table, names in columns}
    return Catalog(database, frozenset(name for name, engine in rows if engine.endswith("MergeTree")),
                   frozenset(name for name, _ in rows), frozenset(name for name, kind in functions if kind == "table"),
                   tenant_columns, {name: kind for name, kind in functions if kind not in ("table", "user")},
                   frozenset(name for name, kind in functions if kind == "user"))


@dataclass(frozen=True)
class Node:
    """One node of the dump: its kind, its text (name, alias) and its children."""

    kind: str
    text: str
    children: tuple[Node, ...]

    @property
    def name(self) -> str:
        """The node's name without its ``(alias ...)``."""
        return self.text.split(" (alias ", 1)[0]


def parse(rows: Sequence[str]) -> Node:
    """The tree of an ``EXPLAIN AST`` dump; :class:`QueryRefused` unless it is exactly one
    well-formed tree (see the module docstring on forged rows)."""
    position = 0

    def node(depth: int) -> Node:
        nonlocal position
        row = rows[position] if position < len(rows) else ""
        counted = _CHILDREN.fullmatch(row)
        match = _ROW.fullmatch(counted["row"] if counted else row)
        if not match or len(match["indent"]) != depth:
            raise QueryRefused("the engine's parse of this query is ambiguous (a name or alias spanning lines?)")
        position += 1
        children = tuple(node(depth + 1) for _ in range(int(counted["n"]) if counted else 0))
        return Node(match["kind"], match["text"] or "", children)

    root = node(0)
    if position != len(rows):
        raise QueryRefused("the engine's parse of this query is ambiguous (a name or alias spanning lines?)")
    return root


def check(rows: Sequence[str], catalog: Catalog, tenant_scoped: bool = False) -> frozenset[str]:
    """The store tables the query of this ``EXPLAIN AST`` dump reads, or :class:`QueryRefused`."""
    return _check(parse(rows), catalog, tenant_scoped)


def _check(root: Node, catalog: Catalog, tenant_scoped: bool) -> frozenset[str]:
    if root.kind != "SelectWithUnionQuery":
        raise QueryRefused(f"only a SELECT can be run here, not {root.kind.removesuffix('Query') or root.kind}")
    for extra in root.children[1:]:
        if extra.kind == "Literal":
            raise QueryRefused("INTO OUTFILE is not allowed: results are returned, never written to files")
        if extra.kind == "Set":
            raise QueryRefused("a SETTINGS clause is not allowed: the limits of this query are fixed")
        if extra.kind != "Identifier" or extra.name != "Native":
            raise QueryRefused("a FORMAT clause is not allowed: the result format is fixed")
    tables: set[str] = set()
    _walk(root.children[0], catalog, tables, tenant_scoped)
    return frozenset(tables)


def _walk(node: Node, catalog: Catalog, tables: set[str], tenant_scoped: bool) -> None:
    if node.kind == "Set":
        raise QueryRefused("a SETTINGS clause is not allowed: the limits of this query are fixed")
    if node.kind not in NODE_KINDS:
        raise QueryRefused(f"{node.kind} is not allowed here" + (
            " (APPLY may call any function unseen)" if node.kind == "ColumnsApplyTransformer" else ""))
    if node.kind == "TableExpression":
        for child in node.children:
            if child.kind == "Function":
                raise QueryRefused(f"table function {child.name}() is not allowed: only the store's own tables "
                                   "can be queried")
            if child.kind not in ("TableIdentifier", "Subquery", "SampleRatio"):
                raise QueryRefused(f"{child.kind} is not allowed in FROM")
    elif node.kind == "TableIdentifier":
        _table(node.name, catalog, tables)
    elif node.kind == "Identifier" and tenant_scoped and any(part.startswith("_") for part in node.name.split(".")):
        raise QueryRefused(f"{node.name}: virtual columns (_part, _part_offset, ...) describe the storage shared "
                           "with other tenants, not your rows")
    elif node.kind == "Function":
        name = node.name.lower()
        if catalog.denies(name):
            raise QueryRefused(f"function {node.name}() is not allowed: it reaches outside the store's rows")
        arguments = node.children[0].children if node.children and node.children[0].kind == "ExpressionList" else ()
        if name in IN_FUNCTIONS and len(arguments) == 2 and arguments[1].kind == "Identifier":
            _table(arguments[1].name, catalog, tables)
    for child in node.children:
        _walk(child, catalog, tables, tenant_scoped)


def _table(name: str, catalog: Catalog, tables: set[str]) -> None:
    database, dot, table = name.partition(".")
    if dot:
        if database != catalog.database:
            raise QueryRefused(f"database {database!r} is not allowed: only the store's own tables can be queried")
    else:
        table = name
        if table not in catalog.objects:
            return  # a CTE (or an unknown table, which the engine refuses)
    if table not in catalog.tables:
        raise QueryRefused(f"{name!r} is not a table of the store: only its own tables can be queried")
    tables.add(table)


def canonical(client: Client, sql: str) -> str:
    """``sql`` as the engine's formatter writes it on one line, or :class:`QueryRefused` if it is
    not exactly one statement that parses.

    The text goes to the engine as a bound parameter of ``formatQuerySingleLine``: it is data
    there, parsed and never run. Running ``EXPLAIN AST <sql>`` on the caller's text would not
    be safe: chdb runs every statement of a multi-statement text (``SELECT 1; DROP ...``
    would drop during the check). The canonical text has no comments, no trailing ``;`` and
    one statement, so the settings the client appends on their own line always belong to it."""
    if not sql.strip():
        raise QueryRefused("empty query")
    try:
        return client.query("SELECT formatQuerySingleLine({sql:String})", parameters={"sql": sql}).result_rows[0][0]
    except Exception as exc:
        raise QueryRefused(f"the query does not parse as one statement: {first_line(exc)}") from None


def explain(client: Client, sql: str) -> list[str]:
    """The rows of the engine's ``EXPLAIN AST`` of ``sql``, a :func:`canonical` text."""
    try:
        return [row[0] for row in client.query(f"EXPLAIN AST {sql}").result_rows]
    except Exception as exc:
        raise QueryRefused(f"the query does not parse: {first_line(exc)}") from None


def guard(client: Client, sql: str, catalog: Catalog, tenant_scoped: bool = False) -> tuple[str, frozenset[str]]:
    """``(sql to run, store tables it reads)`` if ``sql`` may run, else :class:`QueryRefused`.

    ``client`` only parses (``formatQuerySingleLine``, ``EXPLAIN AST``); nothing of ``sql`` runs.
    The SQL to run is the :func:`canonical` text that was checked (wrapped, see above).

    ``tenant_scoped`` (SQL that will see one tenant's rows through ``additional_table_filters``)
    also refuses what runs before that filter or looks past it: an explicit ``PREWHERE`` (its
    conditions meet every tenant's rows, so an error raised there, ``throwIf(value = 42)``,
    tells about other tenants' values: measured; found in the canonical text, where the
    formatter writes the keyword, as the dump does not name clauses) and virtual columns
    (``_part_offset`` counts the rows before yours)."""
    sql = canonical(client, sql)
    if tenant_scoped and re.search(r"\bPREWHERE\b", sql, re.IGNORECASE):
        raise QueryRefused("PREWHERE is not allowed in tenant SQL: its conditions run before the tenant filter")
    root = parse(explain(client, sql))
    tables = _check(root, catalog, tenant_scoped)
    if [child.kind for child in root.children[0].children] != ["SelectQuery"]:  # UNION, INTERSECT, EXCEPT
        sql = f"SELECT * FROM ({sql})"
        tables = check(explain(client, sql), catalog, tenant_scoped)
    return sql, tables


def quote(value: str) -> str:
    """``value`` as a ClickHouse string literal.

    >>> print(quote("it's a \\\\ test"))
    'it\\'s a \\\\ test'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def first_line(exc: Exception) -> str:
    """The gist of an engine error: its first line, without the repeated ``Code: N. DB::Exception:``."""
    text = str(exc).strip()
    text = re.sub(r"^(Code: \d+\. DB::Exception: )+", "", text)
    return text.splitlines()[0][:300] if text else type(exc).__name__
