"""Builds smoothkern; the C++/CUDA extension is added in setup_ext.py when a toolchain exists."""

from setuptools import find_packages, setup

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
        "test": ["pytest", "hypothesis", "pytest-benchmark", "captum", "matplotlib", "pillow",
                 "scikit-learn", "scikit-image"],
    },
    entry_points={"console_scripts": ["smoothkern=smoothkern.cli:main"]},
    package_data={"smoothkern.models": ["weights/*.pt"]},  # bundled digits CNN
)
