# docintel in a container: `docintel serve` on 0.0.0.0:8000, data in the /data volume.
#   docker build -t docintel .
#   docker run -p 8000:8000 -v docintel-data:/data -e DOCINTEL_USERS=alice:change-me docintel
# The same image runs every role (compose.yaml): `docintel serve --workers 0`, `docintel worker`.

# Pinned by tag; both stages use the same image, so the venv's interpreter path holds.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# Build stage: the wheel, and a venv with it and its dependencies. Nothing here
# (pip's caches, the source tree, build tools) reaches the final image.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY docintel ./docintel
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /wheels/docintel-*.whl

FROM ${PYTHON_IMAGE}
# A fixed UID/GID, so a volume or a bind mount can be given to it ahead of time.
RUN groupadd --system --gid 10001 docintel \
    && useradd --system --uid 10001 --gid docintel --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin docintel \
    && mkdir /data \
    && chown docintel:docintel /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOCINTEL_DATA_DIR=/data \
    DOCINTEL_HOST=0.0.0.0 \
    DOCINTEL_PORT=8000
# A new named volume is copied from the image's /data, so it starts owned by docintel.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
# No curl in a slim image: the interpreter that is there does the request.
# urlopen raises on a refused connection, a timeout and any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DOCINTEL_PORT', '8000') + '/healthz', timeout=4)"]
CMD ["docintel", "serve"]
