"""Handler dependencies (provided by :func:`visearch.http.app.create_app` from the app state).

Named dependencies, not validated: they are the app's own objects, passed through as they are
(Litestar would otherwise try to convert them, e.g. copy a :class:`Database` with its lock).
"""

from __future__ import annotations

from litestar.di import NamedDependency
from litestar.params import SkipValidation

from visearch.config import Settings
from visearch.db.database import Database
from visearch.db.routing import ReadRouter
from visearch.http.jobs import EmbedJobs

DB = NamedDependency[SkipValidation[Database]]
AppSettings = NamedDependency[SkipValidation[Settings]]
Jobs = NamedDependency[SkipValidation[EmbedJobs]]
#: Where reads that may be slightly stale go (replicas, else the primary): visearch.db.routing
Reads = NamedDependency[SkipValidation[ReadRouter]]
