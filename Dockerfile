# visearch (CLI, HTTP API, embedding worker). Build: docker build -t visearch .
FROM python:3.11-slim

# torch first and pinned, so the project's own install does not replace it. For a CPU-only
# image pass the PyTorch CPU wheel index: --build-arg TORCH_INDEX_URL=<that index URL>.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"

WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY alembic ./alembic
COPY sql ./sql
COPY visearch ./visearch
RUN pip install --no-cache-dir -c constraints.txt .

# Model caches (open_clip weights from the hub cache) and uploads live here.
ENV VISEARCH_DATA_DIR=/data HF_HOME=/data/hf
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["visearch"]
CMD ["--help"]
