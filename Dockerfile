# hinn: API and worker image. CPU torch by default; for CUDA build with
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t hinn:cuda .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HINN_DATABASE_URL=sqlite:////data/hinn.db \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/var/cache/hinn-numba

RUN useradd --create-home --uid 10001 hinn && mkdir -p /data && chown hinn:hinn /data

WORKDIR /opt/hinn
# torch first, from the index chosen above, so the project's `torch>=2.2` is already satisfied
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY hinn_core ./hinn_core
COPY app ./app
RUN pip install . && hinn --help > /dev/null
# compile the prediction and training kernels into numba's cache now (~3 min) rather than on first use;
# the cache directory must stay writable for numba to use it
RUN python -m hinn_core.fastpath && chown -R hinn:hinn /var/cache/hinn-numba

USER hinn
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["hinn", "serve", "--host", "0.0.0.0", "--port", "8000"]
