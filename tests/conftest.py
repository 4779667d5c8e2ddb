"""Shared fixtures. Tests are offline; real data comes from ../shared (see its README)."""

import os
import subprocess
import sys

import pytest

# Keras is the oracle for layer semantics and losses; its JAX backend needs no TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "jax")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("JAXCNN_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
MNIST_SOURCE = os.path.join(SHARED, "data", "mnist")


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
    """MNIST prepared once per session from ../shared/data/mnist into a temporary data_dir."""
    if not os.path.isdir(MNIST_SOURCE):
        pytest.skip(f"the offline MNIST copy is missing: {MNIST_SOURCE} (set JAXCNN_SHARED)")
    from jaxcnn.data import prepare
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    prepare.prepare("mnist", MNIST_SOURCE, data_dir)
    return data_dir


def run_python(code: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (for settings that must precede importing JAX)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A workdir of the embedded default trained for 2 epochs, once per session (read it; copy to change it)."""
    from jaxcnn import config as config_lib
    from jaxcnn.train import fit
    config = config_lib.get_config()
    config.epochs, config.verbose = 2, 0
    workdir = str(tmp_path_factory.mktemp("digits_run") / "run")
    fit(config, workdir)
    return workdir
