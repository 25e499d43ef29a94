"""Database layer: the bundled server, connections, migrations and the SQL visearch runs."""
