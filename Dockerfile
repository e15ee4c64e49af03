# One image for every shopstream process; compose.yaml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHOPSTREAM_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shopstream ./shopstream
COPY producers ./producers
COPY pipelines ./pipelines
COPY dashboard ./dashboard
RUN pip install .

RUN useradd --create-home shop && mkdir -p /data && chown shop /data
USER shop
VOLUME ["/data"]
ENTRYPOINT ["shopstream"]
CMD ["--help"]
