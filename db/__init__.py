"""SQLAlchemy 2 tables, sessions, repository functions and the array codec. Never imports torch."""

from db.models import JobStatus
from db.session import make_engine, make_sessionmaker

__all__ = ["JobStatus", "make_engine", "make_sessionmaker"]
