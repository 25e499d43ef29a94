"""visearch: Postgres-native visual search for images and the objects inside them."""

__version__ = "0.1.0"
