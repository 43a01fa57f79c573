# syntax=docker/dockerfile:1
# Build: docker build -t switchboard .
# Run:   docker run --env-file prod.env switchboard                  (ingress + REST API)
#        docker run --env-file prod.env switchboard outbox           (delivery worker)
#        docker run --env-file prod.env switchboard migrate          (schema migrations)
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install -c requirements.lock .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home switchboard
COPY --from=build /opt/venv /opt/venv
COPY migrations /app/migrations
ENV PATH=/opt/venv/bin:$PATH \
    SWITCHBOARD_MIGRATIONS_DIR=/app/migrations \
    SWITCHBOARD_HTTP_HOST=0.0.0.0 \
    SWITCHBOARD_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER switchboard
EXPOSE 8080 8081
ENTRYPOINT ["switchboard"]
CMD ["serve"]
