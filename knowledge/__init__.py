"""The knowledge base of the MAPE-K loop: tables, sessions, migrations and shared queries.

Stages and the dashboard import :mod:`knowledge.tables` for rows,
:mod:`knowledge.database` for engines and sessions, :mod:`knowledge.queries`
and :mod:`knowledge.registry` for reads and writes they share,
:mod:`knowledge.audit` for the hash-chained trail, and
:mod:`knowledge.migrate` to bring a database to the current schema.
"""
