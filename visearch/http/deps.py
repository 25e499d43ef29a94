"""Handler dependencies (provided by :func:`visearch.http.app.create_app` from the app state)."""

from __future__ import annotations

from litestar.di import NamedDependency

from visearch.config import Settings
from visearch.db.database import Database
from visearch.http.jobs import EmbedJobs

DB = NamedDependency[Database]
AppSettings = NamedDependency[Settings]
Jobs = NamedDependency[EmbedJobs]
