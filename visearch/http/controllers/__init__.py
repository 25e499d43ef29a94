"""HTTP controllers: request parsing and response shaping only; the work is done by the same
library functions the CLI uses (search, collections, catalog, ingest writer, embed job)."""
