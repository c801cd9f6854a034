# The runtime image of the Kubernetes backend: Python plus mlyard with the extras its steps need.
# Pods run `python -m mlyard.runtime <task-uri>`; code, inputs and outputs come from the artifact
# store (S3), so the image holds no project code and one image serves every pipeline.
#
#   docker build --build-arg EXTRAS=s3,ml -t registry.example.com/mlyard:0.1.0 .
#   docker push registry.example.com/mlyard:0.1.0
#
# EXTRAS must include s3 (the store). Add ml, torch, gpu, ... as the steps need; for CUDA steps
# build FROM an image with the CUDA runtime (BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 needs
# python3.11 installed, or use a PyTorch image as BASE).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG EXTRAS=s3,ml
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/mlyard
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip install ".[${EXTRAS}]" && rm -rf /opt/mlyard/src

# Not root: steps need no privileges, and Pod Security "restricted" namespaces require it.
RUN useradd --create-home --uid 10001 mlyard
USER 10001
WORKDIR /home/mlyard
ENTRYPOINT []
CMD ["python", "-m", "mlyard.runtime", "--help"]
