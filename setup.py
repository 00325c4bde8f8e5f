"""Builds smoothkern; the optional C++/CUDA extension comes from setup_ext.py.

    pip install -e . --no-build-isolation          # C++ CPU op (+ CUDA op with nvcc)
    SMOOTHKERN_SKIP_EXT=1 pip install -e .         # pure Python
"""

import os
import sys

from setuptools import find_packages, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from setup_ext import extensions  # noqa: E402

ext_modules, cmdclass = extensions()

setup(
    name="smoothkern",
    version="0.1.0",
    description="Fast, reproducible noise-averaged attribution maps (SmoothGrad and its family)",
    packages=find_packages(include=["smoothkern", "smoothkern.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        "viz": ["matplotlib", "pillow"],
        "data": ["scikit-learn", "scikit-image"],
        "vision": ["torchvision"],
        "captum": ["captum"],
        "dataset": ["zarr>=3; python_version >= '3.11'"],
        "all": ["matplotlib", "pillow", "scikit-learn", "scikit-image", "torchvision", "captum",
                "zarr>=3; python_version >= '3.11'"],
        # quantus: parity tests of the deletion curves against its PixelFlipping and the
        # explain_func; timm, transformers: the model zoo and text tests (random weights)
        "test": ["pytest", "hypothesis", "pytest-benchmark", "captum", "matplotlib", "pillow",
                 "scikit-learn", "scikit-image", "zarr>=3; python_version >= '3.11'", "quantus",
                 "timm", "transformers"],
    },
    entry_points={"console_scripts": ["smoothkern=smoothkern.cli:main"]},
    package_data={"smoothkern.models": ["weights/*.pt"]},  # bundled digits CNN
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
