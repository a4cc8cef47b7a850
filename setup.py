"""gen_synth: pixel-synthesis GANs (CREPS, PixelFolder, CIPS) in JAX/Flax.

Install (CPU):            pip install -e ".[test]" -c constraints.txt
Install (TPU pod host):   pip install -e ".[tpu]"
Install (CUDA 12 GPUs):   pip install -e ".[cuda]"

Exact pins live only in constraints.txt (used by CI); the ranges below are what
the code supports.
"""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10.0,<0.11",
    "jaxlib>=0.10.0,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.6,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "tensorflow-cpu>=2.19,<2.22",
    "tensorflow-datasets>=4.9.8,<5",
    "tensorboard>=2.19,<2.22",
    "numpy>=1.26,<3",
    "ml-collections>=1.0,<2",
    "clu>=0.0.12,<0.1",
    "pillow>=10",
    "scikit-image>=0.24",
    "dm-pix>=0.4.3,<0.5",
    "scipy>=1.11",
    "absl-py>=2.0",
    "tqdm>=4.60",
    "etils[epath]>=1.5",
]

EXTRAS = {
    # tests/test_notebooks.py runs experiments/notebooks/*.ipynb on a Jupyter kernel.
    "test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.9",
             "ipykernel>=6.29"],
    # Accelerator builds of jaxlib for pod users.
    "tpu": ["jax[tpu]>=0.10.0,<0.11"],
    "cuda": ["jax[cuda12]>=0.10.0,<0.11"],
    # Plots of experiments/ reports.
    "experiments": ["matplotlib>=3.7"],
    # Only for converting the published Inception weights (.pth) to numpy.
    "convert": ["torch>=2.2"],
    # Optional test: the Flax FID Inception equals pytorch-fid's on random weights.
    "fid_parity": ["torch>=2.2", "pytorch-fid>=0.3"],
}

setuptools.setup(
    name="gen_synth",
    version="0.1.0",
    description="Pixel-synthesis GANs (CREPS, PixelFolder, CIPS) in JAX/Flax.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["gen_synth", "gen_synth.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
