"""Alembic environment: runs on the connection `outcall.database` hands it."""

from alembic import context

from outcall.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations with `python -m outcall.database upgrade`")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
