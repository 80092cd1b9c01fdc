"""Alembic environment: runs on the connection of the Database given in the config."""

from alembic import context

from aicloud.shared.db.base import Base

config = context.config
db = config.attributes["database"]

with db.engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
