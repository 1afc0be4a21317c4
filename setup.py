"""tfflow: normalizing flows (NICE, RealNVP, Glow) for TensorFlow and Keras."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="tfflow",
    version="0.1.0",
    description="Normalizing flows for TensorFlow and Keras, built on TensorFlow Probability.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tfflow", "tfflow.*"]),
    package_data={"tfflow": ["_data/*.npz", "_data/README.md"]},
    scripts=sorted(str(p) for p in (HERE / "bin").glob("tfflow-*")),
    install_requires=[
        # The plain wheel runs on CPU; [gpu] below adds CUDA. Tested: TF 2.21.
        "tensorflow>=2.18,<2.22",
        # [tf] brings tf-keras, which TFP imports at first use under Keras 3.
        "tensorflow-probability[tf]>=0.25,<0.26",
        "keras>=3.5",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.0",
        "numpy>=1.26",
    ],
    extras_require={
        # matplotlib draws the run's pictures with axes, colour bars and captions
        # (tfflow.plots); without it they are plain pixels. CI tests both.
        "plots": ["matplotlib>=3.7"],
        # pytest-xdist: `pytest -q` spreads the test files over the cores
        # (setup.cfg's addopts; tests/conftest.py says how).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "matplotlib>=3.7"],
        "gpu": ["tensorflow[and-cuda]>=2.18,<2.22"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
