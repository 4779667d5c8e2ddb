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
CIFAR10_SOURCE = os.path.join(SHARED, "data", "cifar10")
INTEL_SCENES_SOURCE = os.path.join(SHARED, "data", "intel_scenes")
sys.path.insert(0, os.path.join(REPO, "tools"))  # tools/fault_injection.py: the run that faults are injected into


def prepared(tmp_path_factory, kind: str, source: str, what: str, **options) -> str:
    """A temporary data_dir with `kind` prepared from `source` (skips when the copy is missing)."""
    if not os.path.isdir(source):
        pytest.skip(f"the offline {what} copy is missing: {source} (set JAXCNN_SHARED)")
    from jaxcnn.data import prepare
    data_dir = str(tmp_path_factory.mktemp(f"tfds_{kind}"))
    prepare.prepare(kind, source, data_dir, **options)
    return data_dir


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
    """MNIST prepared once per session from ../shared/data/mnist into a temporary data_dir."""
    return prepared(tmp_path_factory, "mnist", MNIST_SOURCE, "MNIST")


def run_python(code: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (for settings that must precede importing JAX)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def cifar10_data_dir(tmp_path_factory):
    """CIFAR-10 prepared once per session from ../shared/data/cifar10 (its .tar.xz archive)."""
    return prepared(tmp_path_factory, "cifar10", CIFAR10_SOURCE, "CIFAR-10")


@pytest.fixture(scope="session")
def intel_scenes_data_dir(tmp_path_factory):
    """The natural-scenes folder tree prepared once per session (150x150, as most of its images)."""
    return prepared(tmp_path_factory, "folder", INTEL_SCENES_SOURCE, "natural-scenes",
                    dataset_name="intel_scenes", resize=(150, 150))


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


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """The record (tools/fault_injection.record) of the fault-injection run, never interrupted."""
    from fault_injection import make_config, record
    from jaxcnn.train import fit
    workdir = tmp_path_factory.mktemp("straight") / "run"
    fit(make_config(), str(workdir))
    return record(workdir)


@pytest.fixture
def xla_convolutions():
    """The test's traced functions use XLA's convolutions, not jaxcnn's oneDNN ones (for the
    forms jaxcnn gives XLA where oneDNN does not run: other backends, several devices, tiny
    outputs; tests/test_onednn.py tests oneDNN's)."""
    from jaxcnn import onednn
    with onednn.switched_off():
        yield
