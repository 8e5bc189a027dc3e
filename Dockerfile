# One image for every Touchstream component; the command picks it:
#   touchstream ingest | sessionizer | sink | topics | migrate | demo ...
# Used by docker-compose.yml. Settings come from TOUCHSTREAM_* environment variables.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first (pinned in pyproject.toml; all ship wheels), so code changes rebuild fast.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY README.md setup.py ./
COPY touchstream ./touchstream
COPY schemas ./schemas
COPY ingest ./ingest
COPY sessionizer ./sessionizer
COPY sink ./sink
COPY dashboard ./dashboard
# gcc only while pip builds the compiled session core (setup.py, mypyc), removed in the same layer
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install --no-deps . \
 && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home touchstream \
 && mkdir -p /data/sessionizer && chown -R touchstream /data  # volumes mounted here stay writable

USER touchstream
WORKDIR /data
ENTRYPOINT ["touchstream"]
CMD ["--help"]
