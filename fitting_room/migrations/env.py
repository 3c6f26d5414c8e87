"""Alembic's entry: runs the migrations on the connection `fitting_room.migrations` hands over."""

from alembic import context

from fitting_room.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through fitting_room.migrations.upgrade (or `make migrate`)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
