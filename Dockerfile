# The tcnsearch image: Ray head, Ray workers, the dashboard and the CLI all run from it.
#
# Which PyTorch build it carries is a choice of GPU and driver (the README's table "CUDA builds"):
#   --build-arg TORCH_CUDA=cu130   Turing to Blackwell (T4, A10G, L4, L40S, A100, H100, H200, B200); driver >= 580
#   --build-arg TORCH_CUDA=cu128   Turing to Blackwell; driver >= 570
#   --build-arg TORCH_CUDA=cu126 --build-arg TORCH_VERSION=2.9.1   Volta and Pascal too (V100, P100); driver >= 525
#   --build-arg TORCH_CUDA=cpu     no GPU
# A build without kernels for the node's GPU is refused at start-up with a line naming the build to use.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu130
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tcnsearch ./tcnsearch
COPY studies ./studies
# torch first, from PyTorch's index for the chosen CUDA build, so the dependencies never pull another one.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
    && pip install --no-cache-dir -e .
# Compile the native TCN kernel into the image once, not in every container.
ENV TCNSEARCH_CACHE=/opt/tcnsearch-cache
RUN python -c "from tcnsearch.ops import dconv; dconv.load()" || true
WORKDIR /work
ENTRYPOINT []
CMD ["tcnsearch", "--help"]
