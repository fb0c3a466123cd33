"""Alembic migrations (render_as_batch so SQLite can ALTER); upgrade_to_head(url)."""
