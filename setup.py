"""siambench: SimSiam pretraining + Detectron2 transfer benchmarks."""
from pathlib import Path

from setuptools import find_packages, setup

__version__ = "0.1.0"

# Every folder of configs/ as a data-only package (no __init__.py) named siambench.configs[.X].
CONFIG_PACKAGES = ["siambench.configs"] + [
    "siambench.configs." + ".".join(d.relative_to("configs").parts)
    for d in sorted(Path("configs").rglob("*")) if d.is_dir() and not d.name.startswith((".", "__"))
]

# Folders of the checkout that are packages of the `siambench` namespace.
FOLDERS = ("pretrain", "transfer", "convert", "benchmarks")

setup(
    name="siambench",
    version=__version__,
    description="SimSiam pretraining and Detectron2 transfer-benchmark suite",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # the pins in requirements/constraints.txt (numpy 2.4, matplotlib 3.11, Pillow 13) need 3.11
    packages=["siambench." + p for p in find_packages(include=[f"{f}*" for f in FOLDERS])]
    + CONFIG_PACKAGES,
    # configs/ ships inside the wheel as siambench/configs (found by pretrain/utils/paths.py).
    # The code folders install as siambench.<folder>; `siambench` is an implicit namespace.
    package_dir={**{f"siambench.{f}": f for f in FOLDERS}, "siambench.configs": "configs"},
    package_data={name: ["*.yaml"] for name in CONFIG_PACKAGES},
    include_package_data=True,
    # What siambench's own code imports. detectron2 is not on PyPI: `make setup`, or
    # `python -m siambench.transfer.install_d2` from a wheel, installs it (transfer/install_d2.py).
    install_requires=[
        "torch>=1.13",
        "torchvision>=0.14",
        "numpy",
        "Pillow",
        "PyYAML",
        "fvcore>=0.1.5,<0.1.6",  # the ranges detectron2 v0.6 pins
        "iopath>=0.1.7,<0.1.10",
        "pycocotools>=2.0.2",
        "matplotlib",
        "tqdm",
        "tabulate",
    ],
    extras_require={
        # detectron2 v0.6's pure-Python dependencies, for the detectron2 that install_d2 copies in
        # without a resolver: its setup.py's install_requires minus black (LazyConfig's optional
        # pretty-printing), future and pydot (not imported by its sources). Transfer needs yacs,
        # termcolor, cloudpickle, omegaconf (imported with detectron2) and tensorboard (its event
        # writer); hydra-core backs LazyConfig overrides; setuptools<81 keeps pkg_resources for
        # detectron2.model_zoo. `siambench doctor` checks them.
        "detectron2": [
            "yacs>=0.1.8",
            "termcolor>=1.1",
            "cloudpickle",
            "omegaconf>=2.1",
            "hydra-core>=1.1",
            "tensorboard",
            "setuptools<81",
        ],
        "fast-eval": ["faster-coco-eval"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["siambench=siambench.benchmarks.cli:main"]},
)
