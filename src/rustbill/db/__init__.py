"""Storage: tables, the engine and sessions, migrations."""

from . import models
from .models import *  # noqa: F403  (the tables: models.__all__)
from .session import Database, redact_url, rowcount

__all__ = [*models.__all__, "Database", "redact_url", "rowcount"]
