"""Persistence: runs, events and checkpoints in SQLite or PostgreSQL.

``models`` (tables), ``sql`` (every statement), ``schema`` (Alembic glue),
``database`` (engine per process), ``codec`` and ``delta`` (checkpoints),
``db`` (WorkflowDB, AsyncWorkflowDB), ``recorder`` (the event sink that
writes runs), ``resume``. Imported only when a database is used.
"""
