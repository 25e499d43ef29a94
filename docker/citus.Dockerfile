# The official Citus image plus pgvector, for `docker compose --profile citus up` (see
# docker-compose.yml). Every node (coordinator and workers) runs this image.
ARG CITUS_TAG=14.0
FROM citusdata/citus:${CITUS_TAG}
RUN apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}-pgvector" \
    && rm -rf /var/lib/apt/lists/*
