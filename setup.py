"""siambench: SimSiam pretraining + Detectron2 transfer benchmarks."""
from setuptools import find_packages, setup

__version__ = "0.1.0"

setup(
    name="siambench",
    version=__version__,
    description="SimSiam pretraining and Detectron2 transfer-benchmark suite",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["pretrain*", "transfer*", "convert*", "benchmarks*"]),
    include_package_data=True,
    # detectron2 is installed by `make setup` (transfer/install_d2.py): it is not on PyPI.
    install_requires=[
        "torch>=1.13",
        "torchvision>=0.14",
        "numpy",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "pycocotools>=2.0.2",
        "matplotlib",
        "tqdm",
        "tabulate",
    ],
    extras_require={"fast-eval": ["faster-coco-eval"], "test": ["pytest"]},
    entry_points={"console_scripts": ["siambench=benchmarks.cli:main"]},
)
