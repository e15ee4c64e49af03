# One image for every shopstream process; compose.yaml picks the command of each container.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHOPSTREAM_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shopstream ./shopstream
COPY producers ./producers
COPY pipelines ./pipelines
COPY readmodels ./readmodels
COPY dashboard ./dashboard
COPY tour ./tour
COPY benchmarks ./benchmarks
RUN pip install .

# /data: the state stores, status and logs of the container's one process (a volume per
# container, so replicas never share one). /data/lake and /lake/files: where compose mounts
# the shared read models; made here so that the volumes belong to `shop` too.
RUN useradd --create-home shop && mkdir -p /data/lake /lake/files && chown -R shop /data /lake
USER shop
VOLUME ["/data"]

# Replicas of one app (`docker compose up --scale NAME=N`) must not share a transactional.id:
# each would fence the others. Unless SHOPSTREAM_INSTANCE_ID is set, it is the container's
# hostname - unique among replicas, and the same across restarts of one container, so a
# restarted app still fences its crashed self.
ENTRYPOINT ["/bin/sh", "-c", "export SHOPSTREAM_INSTANCE_ID=\"${SHOPSTREAM_INSTANCE_ID:-${HOSTNAME:-0}}\" && exec shopstream \"$@\"", "shopstream"]
CMD ["--help"]
