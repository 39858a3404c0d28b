# The pipeline worker image (used by docker-compose.yml). It runs as an unprivileged user that
# owns only /data (the tenant registry, the model-state key, the embedded store if no server).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY core core
COPY m1 m1
COPY streams streams
COPY models models
COPY sinks sinks
COPY schemas schemas
COPY traces traces
COPY tenancy tenancy
COPY api api
COPY audit audit
COPY compliance compliance
COPY workflows workflows
COPY integrations integrations
COPY regions regions
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin m1 \
    && mkdir -p /data && chown m1 /data && chmod 0700 /data
USER m1
ENV M1_HOME=/data
VOLUME ["/data"]
EXPOSE 6066
HEALTHCHECK --interval=10s --retries=10 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/v1/health', timeout=3)"]
ENTRYPOINT ["m1"]
CMD ["worker", "--loglevel", "info"]
