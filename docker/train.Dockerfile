# syntax=docker/dockerfile:1
# Ember training image: CUDA PyTorch + ember_training (and the torch-free `ember` package it
# verifies exports with). Build from the repository root:
#
#   docker build -f docker/train.Dockerfile -t ember-train .
#
# One GPU, or every GPU of the host with torchrun (DDP; ranks shard the data, rank 0 writes):
#
#   docker run --rm --gpus all --ipc=host -v /data:/data -v "$PWD/runs:/runs" ember-train \
#       --config config/train/full.yaml --stage all --data-dir /data --output-dir /runs/full
#   docker run --rm --gpus all --ipc=host -v /data:/data -v "$PWD/runs:/runs" --entrypoint torchrun ember-train \
#       --nproc_per_node 4 --no-python ember-train --config config/train/full.yaml --data-dir /data --output-dir /runs/full
#
# PYTORCH_IMAGE must carry the torch of requirements/train.txt; the build stops if it does not.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${PYTORCH_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/ember
# Requirements first (cached layer). torch is the base image's own CUDA build: check it
# against the pin before pip runs, so pip keeps it instead of installing a second torch.
COPY requirements/train.txt requirements/robot.txt requirements/robot-tools.txt requirements/
COPY docker/check_torch.py docker/check_torch.py
RUN python docker/check_torch.py requirements/train.txt --require-cuda \
    && pip install --no-cache-dir -r requirements/train.txt -r requirements/robot.txt -r requirements/robot-tools.txt

# The packages. ros2_ws/src/ember keeps its place beside requirements/, config/ and launch/
# (its requirements.txt, config and launch links point there).
COPY pyproject.toml ./
COPY config/ config/
COPY launch/ launch/
COPY ember_training/ ember_training/
COPY ros2_ws/src/ember/ ros2_ws/src/ember/
RUN pip install --no-cache-dir --no-deps ./ros2_ws/src/ember . \
    && ember-train --help >/dev/null

# Non-root (uid 10001). For bind mounts owned by you, add --user "$(id -u):$(id -g)": the home
# folder is writable for any uid, so caches (Hugging Face, CodeCarbon) still work.
RUN groupadd --gid 10001 ember \
    && useradd --no-log-init --create-home --uid 10001 --gid ember ember \
    && chmod 1777 /home/ember \
    && mkdir -p /runs /data \
    && chown ember:ember /runs /data
USER 10001:10001
ENV HOME=/home/ember \
    HF_HOME=/home/ember/.cache/huggingface

ENTRYPOINT ["ember-train"]
CMD ["--help"]
