"""jaxcnn's compiled steps give convolutions to XLA's own CPU kernels (jaxcnn.backend), with
the results of plain `jax.jit`, and a user's XLA_FLAGS wins (speed: tools/bench_conv.py).
These are the convolutions XLA runs: the tests switch jaxcnn's oneDNN convolutions off."""

import json
import os
import platform
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import backend, config as config_lib
from jaxcnn.data import Dataset, Split
from jaxcnn.train import Trainer

from conftest import REPO

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are for XLA CPU")


pytestmark = pytest.mark.usefixtures("xla_convolutions")


@pytest.fixture
def fresh_options(monkeypatch):
    """The option's applicability recomputed under the test's environment, and again after it."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    backend._options_apply.cache_clear()
    yield monkeypatch
    backend._options_apply.cache_clear()


def _kernels(*shapes):
    """Abstract parameters of convolutions with these kernel shapes."""
    return {f"conv{i}": {"kernel": jax.ShapeDtypeStruct(shape, jnp.float32),
                         "bias": jax.ShapeDtypeStruct(shape[-1:], jnp.float32)} for i, shape in enumerate(shapes)}


def _two_convolutions(x, kernel):
    conv = lambda x: jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",  # noqa: E731
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(conv(jax.nn.relu(conv(x)))))


@cpu_only
def test_convolutions_of_many_channels_are_compiled_for_xla_own_kernels_with_the_same_results(fresh_options):
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 32))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 32, 32)) * 0.05
    value_and_grads = jax.value_and_grad(_two_convolutions, argnums=(0, 1))
    plain = jax.jit(value_and_grads)
    ours = backend.jit(value_and_grads, backend.compiler_options({"kernel": kernel}))
    assert backend.ynnpack_convolutions(plain.lower(x, kernel).compile().as_text()) > 0  # XLA's default here
    assert backend.ynnpack_convolutions(ours.lower(x, kernel).compile().as_text()) == 0
    for got, want in zip(jax.tree.leaves(ours(x, kernel)), jax.tree.leaves(plain(x, kernel))):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@cpu_only
def test_which_models_get_the_option(fresh_options):
    eigen = backend.CONVOLUTIONS_ON_EIGEN
    # One or two channels through a window jaxcnn sums as taps: only the gradients are convolutions.
    assert backend.compiler_options(_kernels((3, 3, 1, 32))) == eigen  # the course's CNN
    assert backend.compiler_options(_kernels((3, 3, 2, 64))) == eigen
    # Through a larger window (a convolution in jaxcnn too), YNNPACK runs them forward faster.
    assert backend.compiler_options(_kernels((7, 7, 1, 32))) == ()
    assert backend.compiler_options(_kernels((5, 5, 2, 32))) == ()
    assert backend.compiler_options(_kernels((5, 5, 1, 6), (5, 5, 6, 16))) == ()  # LeNet-5: none for YNNPACK
    assert backend.compiler_options(_kernels((1, 1, 64, 256))) == ()  # 1x1: a matrix product in jaxcnn
    assert backend.compiler_options(_kernels((3, 3, 1, 32), (3, 3, 32, 64))) == eigen
    assert backend.compiler_options(_kernels((3, 3, 3, 32))) == eigen  # a colour stem
    assert backend.compiler_options(_kernels((3, 3, 16, 16), (3, 3, 16, 32))) == eigen  # resnet20
    assert backend.compiler_options({"dense": {"kernel": jnp.zeros((64, 64))}}) == ()


@cpu_only
def test_temporaries_in_heaps_only_where_the_largest_array_fits_one(fresh_options):
    heaps, limit = backend.TEMPORARIES_IN_HEAPS, backend.TEMPORARY_HEAP_BYTES
    dense = {"dense": {"kernel": jnp.zeros((64, 64))}}
    assert backend.compiler_options(dense, largest_activation=limit) == heaps
    assert backend.compiler_options(dense, largest_activation=limit + 1) == ()
    assert backend.compiler_options(dense) == ()  # not known: XLA's one block
    resnet20 = _kernels((3, 3, 16, 16), (3, 3, 16, 32))
    assert backend.compiler_options(resnet20, largest_activation=8 << 20) == backend.CONVOLUTIONS_ON_EIGEN + heaps
    fresh_options.setenv("XLA_FLAGS", "--xla_multiheap_size_constraint_per_heap=-1")  # the user's choice wins
    backend._options_apply.cache_clear()
    assert backend.compiler_options(dense, largest_activation=limit) == ()


def _temporary_allocations(dump_dir) -> list[int]:
    """Sizes of the temporary blocks in XLA's own buffer assignment of the one module dumped."""
    (path,) = dump_dir.glob("*buffer-assignment.txt")
    return [int(n) for n in re.findall(r"allocation \d+: size (\d+), preallocated-temp", path.read_text())]


@cpu_only
def test_xla_splits_the_temporaries_into_heaps_with_the_same_results(fresh_options, tmp_path):
    def loss(x):  # twelve 4 MB products, kept for the gradient: 48 MB and more of temporaries
        for _ in range(12):
            x = jnp.tanh(x @ x) * 2
        return jnp.sum(x)
    x = jax.random.normal(jax.random.key(0), (1024, 1024)) / 32
    results = {}
    for name, options in [("plain", ()), ("heaps", backend.TEMPORARIES_IN_HEAPS)]:
        step = jax.jit(jax.grad(loss), compiler_options={**dict(options), "xla_dump_to": str(tmp_path / name)})
        step.lower(x).compile()
        results[name] = _temporary_allocations(tmp_path / name), step(x)
    (plain, plain_grad), (heaps, heaps_grad) = results["plain"], results["heaps"]
    assert len(plain) == 1 and plain[0] > backend.TEMPORARY_HEAP_BYTES
    assert len(heaps) > 1 and max(heaps) <= backend.TEMPORARY_HEAP_BYTES
    np.testing.assert_array_equal(heaps_grad, plain_grad)  # where buffers live changes no arithmetic


@cpu_only
@pytest.mark.parametrize("batch, in_heaps", [(64, True), (1024, False)])
def test_the_trainer_asks_for_heaps_when_its_batch_largest_array_fits_one(fresh_options, batch, in_heaps):
    # simple_cnn on 28x28x1: its 26x26x32 convolution output is its largest array, 86,528 bytes an image
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(batch, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=batch).astype(np.int32)
    dataset = Dataset("random", Split(images, labels), None, Split(images, labels), list("0123456789"), 255.0)
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "model": "simple_cnn", "batch_size": str(batch), "eval_batch_size": "1024", "verbose": "0"})
    trainer = Trainer(config, dataset=dataset)
    assert (backend.TEMPORARIES_IN_HEAPS[0] in trainer.compiler_options) == in_heaps
    assert backend.TEMPORARIES_IN_HEAPS[0] not in trainer.eval_compiler_options  # 1024 images: 88 MB


@cpu_only
def test_a_user_xla_flag_for_ynnpack_fusions_wins(fresh_options):
    fresh_options.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot,"
                                      "individual_convolution,reduce")
    assert backend.compiler_options(_kernels((3, 3, 32, 32))) == ()


@cpu_only
def test_an_option_this_jaxlib_rejects_leaves_the_default(fresh_options):
    fresh_options.setattr(backend, "CONVOLUTIONS_ON_EIGEN",
                          ((backend._YNN_FUSION, "LIBRARY_FUSION_TYPE_NO_SUCH_KIND"),))
    assert backend.compiler_options(_kernels((3, 3, 32, 32))) == ()


@cpu_only
@pytest.mark.parametrize("filters, kernel_size, on_ynnpack", [("32", "7", True), ("((32, 64),)", "3", False)])
def test_the_trainer_compiles_its_steps_with_the_options_of_its_model(fresh_options, filters, kernel_size, on_ynnpack):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 12, 12, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, size=16).astype(np.int32)
    dataset = Dataset("random", Split(images, labels), None, Split(images, labels), ["a", "b", "c"], 255.0)
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "model": "simple_cnn", "model_kwargs.filters": filters, "model_kwargs.kernel_size": kernel_size,
        "batch_size": "8", "verbose": "0", "epochs": "1"})
    trainer = Trainer(config, dataset=dataset)
    batch = next(iter(trainer.train_data.batches(trainer.shuffle_rng, 0)))
    train = trainer._train_step.lower(trainer.state, batch, trainer.dropout_rng).compile().as_text()
    evaluate = trainer._eval_step.lower(trainer.state, batch).compile().as_text()
    assert "convolution(" in train and "convolution(" in evaluate
    assert (backend.ynnpack_convolutions(train) > 0) == (backend.ynnpack_convolutions(evaluate) > 0) == on_ynnpack


@cpu_only
def test_the_train_step_benchmark_compares_jaxcnn_choice_with_xla_default(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "tools/bench_train_step.py", "--model", "resnet20", "--shape", "8x8x3",
                    "--batch", "4", "--steps", "1", "--windows", "2", "--compare-xla-default", "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True,
                   env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
    result = json.loads(out.read_text())
    assert result["compiler_options"] == dict(backend.CONVOLUTIONS_ON_EIGEN + backend.TEMPORARIES_IN_HEAPS)
    assert result["xla_default"]["compiler_options"] == {}
    # resnet20's 32- and 64-channel convolutions: YNNPACK's only under XLA's default
    assert result["ynnpack_convolutions"] == 0 < result["xla_default"]["ynnpack_convolutions"]
    assert len(result["windows"]) == len(result["xla_default"]["windows"]) == 2


# A 20 MB block malloc'd, written, freed, then malloc'd and written again: how many pages fault
# the second time (glibc's default maps a block that large afresh: every page faults again).
_REFAULTS = """
import ctypes, resource
{setup}
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 20 << 20
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touch())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
libc.free(block)
"""
_STEP_WITH_HEAPS = ("import jax.numpy as jnp; from jaxcnn import backend; "
                    "backend.jit(lambda x: jnp.tanh(x) * 2, backend.TEMPORARIES_IN_HEAPS)(jnp.ones(8)).block_until_ready()")


@pytest.mark.parametrize("setting,kept", [(None, True), ("0", False)])
def test_a_step_compiled_with_heaps_makes_glibc_keep_freed_blocks(setting, kept):
    """After jaxcnn compiles a step with heaps, a freed block of up to 32 MB is reused without
    faulting its pages in again; `JAXCNN_KEEP_FREED_MEMORY=0` leaves glibc's default (a fresh
    mapping each time: 5,120 faults for 20 MB)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc")
    env = {k: v for k, v in os.environ.items() if k != "JAXCNN_KEEP_FREED_MEMORY"}
    if setting:
        env["JAXCNN_KEEP_FREED_MEMORY"] = setting
    result = subprocess.run([sys.executable, "-c", _REFAULTS.format(setup=_STEP_WITH_HEAPS)], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    refaults = int(result.stdout.split()[-1])
    assert (refaults < 100) == kept, refaults
    plain = subprocess.run([sys.executable, "-c", _REFAULTS.format(setup="")], capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert int(plain.stdout.split()[-1]) > 4000  # the oracle: glibc's own default faults them all
