"""Install the DPC prompt-learning code (run from the repository root: pip install -e .)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="dpc-prompt",
    version="0.1.0",
    description="Dual-Prompt Collaboration (CVPR 2025) for CLIP prompt learners on Dassl.pytorch",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["trainers", "trainers.*", "datasets", "datasets.*", "tools", "tools.*"]),
    install_requires=read_requirements(),
    license="MIT",
)
