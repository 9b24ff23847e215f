# The tcnsearch image: Ray head, Ray workers, the dashboard and the CLI all run from it.
# CUDA comes with PyTorch's wheels (the default PyPI build of torch bundles it).
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tcnsearch ./tcnsearch
COPY studies ./studies
# torch first, pinned as in the Makefile, so the dependencies never pull another build.
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir -e .
# Compile the native TCN kernel into the image once, not in every container.
ENV TCNSEARCH_CACHE=/opt/tcnsearch-cache
RUN python -c "from tcnsearch.ops import dconv; dconv.load()" || true
WORKDIR /work
ENTRYPOINT []
CMD ["tcnsearch", "--help"]
