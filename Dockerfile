# Kiln image: the `jobs` CLI, the cpu and gpu workers, migrations and Flower.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch first, pinned to pyproject's version, so `pip install .` below finds it satisfied.
# From PyPI the linux/amd64 wheel carries CUDA (several GB), so one image serves both workers.
# For a slim cpu-only image: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

COPY pyproject.toml README.md ./
COPY kiln ./kiln
COPY inference ./inference
COPY db ./db
COPY scheduler ./scheduler
COPY worker ./worker
# flower is not a dependency of the package; the compose stack's `flower` service needs it.
RUN pip install . "flower>=2.0,<3" \
    && useradd --create-home --uid 10001 kiln

USER 10001
ENV KILN_HOME=/home/kiln/.kiln
ENTRYPOINT ["jobs"]
CMD ["--help"]
