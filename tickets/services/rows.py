"""Model rows stored and loaded with plain SQL, for the statements every customer message and every reply's
delivery make (SPEC §5), and for the task queue's rows (ops.task_backend).

Through the ORM, building and compiling a statement and loading its row cost 0.3 to 0.5 ms of CPU beyond the
round trip itself; a customer's message makes four such statements (bench/profiles/webhook-rows.txt).
Values still go through the fields' own conversions both ways, so a row here is stored and loaded as the
ORM would store and load it. What the ORM does besides is not done: no pre_save or post_save signals (a
caller whose model has receivers sends them itself, as the task queue does), no database routing (the
project has one database), and related instances must already be saved.
"""

import functools

from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import pq


def _connection():
    # The connection itself, not django.db.connection: each attribute of that proxy is looked up in a
    # thread-and-task local, and converting a row's values reads a dozen of them per field.
    return connections[DEFAULT_DB_ALIAS]


def columns(model, table_alias=None):
    """The model's concrete columns, qualified by ``table_alias`` if given, in the order ``load`` reads them."""
    connection = _connection()
    return _columns(model, table_alias, connection.vendor)


# Each cache below is keyed by the database vendor too: its SQL and converters are that vendor's.
@functools.cache
def _columns(model, table_alias, vendor):
    connection = _connection()
    prefix = f"{table_alias}." if table_alias else ""
    return ", ".join(f"{prefix}{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


@functools.cache
def _converters(model, vendor):
    """(position, column, the backend's converters, the field's) of each of the model's columns whose values
    need converting (SQLite's dates, JSON), as the ORM's compiler finds them. The backend's are kept unbound:
    bound, they would hold on to the connection of the thread that filled the cache."""
    connection = _connection()
    found = []
    for position, field in enumerate(model._meta.concrete_fields):
        column = field.get_col(model._meta.db_table)
        backend = tuple(converter.__func__ for converter in connection.ops.get_db_converters(column))
        own = tuple(column.get_db_converters(connection))
        if backend or own:
            found.append((position, column, backend, own))
    return tuple(found)


def load(model, values):
    """The model instance of a row of ``columns(model, …)``, as a queryset would load it."""
    connection = _connection()
    values = list(values)
    ops = connection.ops
    for position, column, backend, own in _converters(model, connection.vendor):
        value = values[position]
        for converter in backend:
            value = converter(ops, value, column, connection)
        for converter in own:
            value = converter(value, column, connection)
        values[position] = value
    return model.from_db(connection.alias, None, values)


@functools.cache
def _insert_sql(model, count, vendor):
    connection = _connection()
    meta = model._meta
    if meta.parents or any(field.generated or field.has_db_default() for field in meta.concrete_fields):
        raise TypeError(f"rows.insert stores plain models only (no parents, no database-made values): {model}.")
    fields = tuple(field for field in meta.local_concrete_fields if field is not meta.auto_field)
    names = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({names}) VALUES {', '.join([row] * count)} "
        f"RETURNING {connection.ops.quote_name(meta.pk.column)}"
    )
    return sql, fields


def insert(*instances):
    """Store new instances of one model with one INSERT, as ``bulk_create`` does: defaults and ``auto_now_add``
    applied, each instance's pk set from the row it became (in the order given, as bulk_create relies on
    too)."""
    if instances:
        (keys,) = in_turn(insert_statement(*instances))
        mark_inserted(instances, keys)


def insert_after(guard, *instances, refusal):
    """``insert``, in the same round trip (``in_turn``) as the UPDATE ``guard`` (sql, params) that must change
    exactly one row: a number taken from a row the caller's transaction locked, checked against the value
    it read. Else RuntimeError(``refusal``), and the caller's transaction rolls back with the rows."""
    changed, keys = in_turn(guard, insert_statement(*instances))
    if changed != 1:
        raise RuntimeError(refusal)
    mark_inserted(instances, keys)


def insert_statement(*instances):
    """``insert``'s statement, to send with others (``in_turn``); ``mark_inserted`` then takes the rows it returns."""
    connection = _connection()
    model = type(instances[0])
    sql, fields = _insert_sql(model, len(instances), connection.vendor)
    params = [
        field.get_db_prep_save(field.pre_save(instance, True), connection) for instance in instances for field in fields
    ]
    return sql, params


def mark_inserted(instances, keys):
    """Mark ``instances`` stored, with the keys of the rows ``insert_statement`` returned (a key the instance
    was given stays as it is: the database returns it in its own form, SQLite a UUID as hex text)."""
    connection = _connection()
    for instance, (pk,) in zip(instances, keys, strict=True):
        if instance._meta.pk is instance._meta.auto_field:
            instance.pk = pk
        instance._state.adding = False
        instance._state.db = connection.alias


def assignments(model, values):
    """The ``column = %s`` items of an UPDATE's SET storing ``values`` ({field name or attname: value}) as the
    ORM would store them, and their parameters."""
    connection = _connection()
    fields = {name: model._meta.get_field(name) for name in values}
    items = [f"{connection.ops.quote_name(field.column)} = %s" for field in fields.values()]
    return items, [field.get_db_prep_save(values[name], connection) for name, field in fields.items()]


def moment(value):
    """A datetime as a statement's parameter, as the ORM passes it (SQLite stores naive UTC text)."""
    connection = _connection()
    return connection.ops.adapt_datetimefield_value(value)


def equals(column, value):
    """A WHERE condition that ``column`` holds ``value`` (a database value), NULL included as the ORM's exact
    lookup has it, and its parameters."""
    return (f"{column} IS NULL", []) if value is None else (f"{column} = %s", [value])


def in_turn(*statements):
    """Run ``(sql, params)`` statements one after the other; returns each one's rows, or for a statement that
    returns none the number of rows it changed.

    On PostgreSQL they go in one round trip: one simple query of several statements, as the client-side
    binding cursor Django uses sends it. Each still runs as a statement of its own once the one before it
    has finished, reading (READ COMMITTED) with a snapshot taken as it starts: it sees what the ones before
    it wrote, and what others committed while those waited for a lock, as if each were sent alone. An
    error stops the rest.
    """
    connection = _connection()
    if len(statements) > 1 and not connection.in_atomic_block:
        # Alone they would commit one by one, together all or nothing: only a transaction makes them alike.
        raise RuntimeError("rows.in_turn sends several statements only inside a transaction.")
    results = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not connection.features.uses_server_side_binding:
            cursor.execute(
                "; ".join(sql for sql, _ in statements), [value for _, params in statements for value in params]
            )
            for number in range(len(statements)):
                if number and not cursor.nextset():
                    raise RuntimeError(f"rows.in_turn sent {len(statements)} statements and got {number} results.")
                results.append(_pg_result(cursor))
            if cursor.nextset():
                raise RuntimeError(f"rows.in_turn sent {len(statements)} statements and got more results.")
        else:  # SQLite, and PostgreSQL's server-side binding, run one statement per call
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(_result(cursor))
    return results


def _result(cursor):
    return cursor.fetchall() if cursor.description is not None else cursor.rowcount


def _pg_result(cursor):
    # As _result, but psycopg's description would build an object for each of the result's columns only to
    # say that there are rows.
    return cursor.fetchall() if cursor.cursor.pgresult.status == pq.ExecStatus.TUPLES_OK else cursor.rowcount
