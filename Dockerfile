# The worker image (docker-compose.yml builds it).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream_app ./stream_app
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["stream-app"]
CMD ["worker"]
