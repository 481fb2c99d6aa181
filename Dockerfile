FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends xmlsec1 fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker broker
COPY adapters adapters
COPY schemas schemas
COPY config config
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["lienthong", "--help"]
