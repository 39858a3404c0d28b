# The pipeline worker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY m1 m1
COPY streams streams
COPY models models
COPY sinks sinks
COPY schemas schemas
COPY traces traces
RUN pip install --no-cache-dir -c constraints.txt .
ENV M1_HOME=/data
VOLUME ["/data"]
EXPOSE 6066
ENTRYPOINT ["m1"]
CMD ["worker", "--loglevel", "info"]
