"""The HTTP API (Litestar): ``visearch serve``; :func:`visearch.http.app.create_app`."""
