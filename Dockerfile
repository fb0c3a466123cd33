# Kiln image: the `jobs` CLI, workers and Flower. CPU torch by default.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# torch first and pinned: a looser requirement pulls several GB of CUDA wheels.
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY kiln ./kiln
COPY inference ./inference
COPY db ./db
COPY scheduler ./scheduler
COPY worker ./worker
RUN pip install . flower
RUN useradd --create-home kiln
USER kiln
ENV KILN_HOME=/home/kiln/.kiln
ENTRYPOINT ["jobs"]
CMD ["--help"]
