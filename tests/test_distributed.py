"""Data parallelism: 4 forced CPU devices in one process, and 2 processes on localhost
joined by jax.distributed (Gloo collectives), each equal to one device within float
tolerance, BatchNorm statistics included (they are the global batch's, not a device's)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

# A small network with BatchNorm, registered in each process that trains it.
MODEL_CODE = '''
import flax.linen as nn
from jaxcnn import layers, models
from jaxcnn.models.base import Classifier

class BatchNormNet(Classifier):
    @nn.compact
    def __call__(self, x, train: bool = False):
        # No bias before BatchNorm: it cancels it, so Adam would move it on rounding noise alone.
        x = nn.Conv(8, (3, 3), use_bias=False, name="conv")(x)
        x = layers.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
        x = layers.max_pool(nn.relu(x), 2)
        return nn.Dense(self.num_classes, name="head")(layers.flatten(x))

if "batchnorm_net" not in models.names():
    models.register("batchnorm_net", BatchNormNet)

def make_config():
    from jaxcnn import config as config_lib
    c = config_lib.get_config()
    c.model, c.verbose, c.epochs, c.batch_size = "batchnorm_net", 0, 2, 32
    c.model_kwargs.dropout_rate = 0.0
    c.callbacks.tensorboard.enabled = False
    c.callbacks.csv_logger.enabled = True
    return c
'''

RUN = MODEL_CODE + '''
import json, os, signal, sys, jax
from jaxcnn.train import Callback, Trainer
from jaxcnn.train import distributed
config = make_config()
workdir, extra, sigterm = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])

class Sigterm(Callback):  # [process, step]: that process receives SIGTERM at that step
    def on_train_batch_begin(self, step, logs=None):
        if sigterm and [jax.process_index(), step] == sigterm:
            os.kill(os.getpid(), signal.SIGTERM)

config.distributed.update(extra)
distributed.initialize(config)
trainer = Trainer(config)
history = trainer.fit(workdir, callbacks=[Sigterm()])
batch = next(trainer.train_data.batches())
print("RESULT " + json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
    "batch_devices": len(batch["image"].sharding.device_set),
    "local_rows": int(batch["image"].addressable_shards[0].data.shape[0]),
    "loss": history.history["loss"], "val_loss": history.history["val_loss"],
    "bn_mean": jax.device_get(trainer.state.batch_stats["bn"]["mean"]).tolist(),
    "bn_var": jax.device_get(trainer.state.batch_stats["bn"]["var"]).tolist(),
    "params": {f"{layer}/{name}": jax.device_get(value).ravel().tolist()
               for layer, leaves in trainer.state.params.items() for name, value in leaves.items()}}))
'''


def result(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def launch(workdir, devices: int, distributed: dict | None = None, wait: bool = True, sigterm=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    args = [sys.executable, "-c", RUN, str(workdir), json.dumps(distributed or {}), json.dumps(sigterm)]
    if wait:
        return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one") / "run"
    return result(launch(workdir, 1)), workdir


def assert_close(got: dict, expected: dict):
    for key in ("loss", "val_loss", "bn_mean", "bn_var"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=2e-5, err_msg=key)
    assert got["params"].keys() == expected["params"].keys()
    for name in expected["params"]:
        np.testing.assert_allclose(got["params"][name], expected["params"][name], rtol=0, atol=2e-5, err_msg=name)


@pytest.fixture
def batchnorm_net():
    """The test model registered in this process too, for as long as a test needs it."""
    from jaxcnn import models
    namespace = {}
    exec(MODEL_CODE, namespace)
    yield namespace["make_config"]
    models._REGISTRY.pop("batchnorm_net", None)


def test_four_devices_equal_one_device_batchnorm_statistics_included(tmp_path, one_device, batchnorm_net):
    expected, _ = one_device
    four = result(launch(tmp_path / "run", 4))
    assert (expected["devices"], four["devices"]) == (1, 4)
    assert four["batch_devices"] == 4 and four["local_rows"] == 8  # each device holds a quarter of a batch
    # A per-device BatchNorm would keep statistics of quarter batches: not these.
    assert_close(four, expected)
    # The checkpoint saved on 4 devices restores onto this process's single device.
    from jaxcnn.train import Trainer, checkpoint
    state, meta = checkpoint.restore(str(tmp_path / "run"), Trainer(batchnorm_net()).state)
    assert meta["epoch"] == 2 and len(state.params["conv"]["kernel"].sharding.device_set) == 1
    np.testing.assert_allclose(np.ravel(state.params["conv"]["kernel"]), expected["params"]["conv/kernel"],
                               rtol=0, atol=2e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(workdir, sigterm=None) -> list[subprocess.CompletedProcess]:
    port = free_port()
    procs = [launch(workdir, 2, {"coordinator_address": f"localhost:{port}", "num_processes": 2, "process_id": i},
                    wait=False, sigterm=sigterm) for i in (0, 1)]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def test_two_processes_equal_one_device_and_only_process_0_writes(tmp_path, one_device, batchnorm_net):
    expected, _ = one_device
    workdir = tmp_path / "run"
    outputs = [result(proc) for proc in two_processes(workdir)]
    for i, out in enumerate(outputs):
        assert (out["process"], out["processes"], out["devices"]) == (i, 2, 4)
        assert out["batch_devices"] == 4 and out["local_rows"] == 8  # each process feeds its own shard
        assert_close(out, expected)
    # One line per epoch in each log: process 1 wrote none.
    assert [json.loads(line)["epoch"] for line in open(workdir / "metrics.jsonl")] == [1, 2]
    assert [line.split(",")[0] for line in open(workdir / "training.csv").read().splitlines()] == ["epoch", "0", "1"]
    # The checkpoint both processes wrote restores in this single process.
    from jaxcnn.train import Trainer, checkpoint
    state, _ = checkpoint.restore(str(workdir), Trainer(batchnorm_net()).state)
    np.testing.assert_allclose(np.ravel(state.params["head"]["kernel"]), expected["params"]["head/kernel"],
                               rtol=0, atol=2e-5)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_and_the_resume_is_exact(tmp_path, one_device):
    expected, _ = one_device
    workdir = tmp_path / "run"
    stopped = two_processes(workdir, sigterm=[1, 20])
    assert [p.returncode for p in stopped] == [0, 0], [p.stderr[-2000:] for p in stopped]
    step = int(stopped[0].stderr.split("saved a checkpoint at step ")[1].split()[0])
    assert 20 < step < 82 and step in {int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()}
    for out in (result(proc) for proc in two_processes(workdir)):
        assert_close(out, expected)


def test_multi_host_settings_come_from_the_config_else_the_environment(monkeypatch):
    from jaxcnn import config as config_lib
    from jaxcnn.errors import UserError
    from jaxcnn.train import distributed
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    config = config_lib.get_config()
    assert distributed.settings(config) == (None, None, None)
    assert distributed.initialize(config) is False  # one process: nothing to join
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "head:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    assert distributed.settings(config) == ("head:1234", 4, 2)
    config.distributed.update(coordinator_address="node0:99", num_processes=2, process_id=0)
    assert distributed.settings(config) == ("node0:99", 2, 0)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "four")
    with pytest.raises(UserError, match="JAX_NUM_PROCESSES='four' is not an integer"):
        distributed.settings(config_lib.get_config())
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(UserError, match="needs a coordinator"):
        distributed.initialize(config_lib.get_config())


QUEUED_STEPS = '''
import jax, numpy as np
from jaxcnn import config as config_lib
from jaxcnn.data import Dataset, Split
from jaxcnn.train import Trainer, steps
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (64 * 10, 28, 28, 1), np.uint8), rng.integers(0, 10, 64 * 10).astype(np.int32)
split = Split(images, labels)
config = config_lib.apply_overrides(config_lib.get_config(), {"model": "simple_cnn", "batch_size": "64", "verbose": "0"})
trainer = Trainer(config, dataset=Dataset("random", split, None, split, [str(i) for i in range(10)], 255.0))
batches = list(trainer.train_data.batches(trainer.shuffle_rng, 0))
state, in_flight = trainer.state, steps.InFlight()
for i in range(200):  # dispatched as fast as the host can: the loop would run ~200 steps ahead
    state, metrics = trainer._train_step(state, batches[i % len(batches)], trainer.dropout_rng)
    in_flight.add(metrics)
print("RESULT", jax.device_count(), int(state.step))
'''


def test_a_long_train_loop_on_two_cpu_devices_does_not_deadlock():
    """XLA's CPU client hung (then aborted after a 40 s rendezvous timeout) when one device
    had 34 or more train steps queued on this 2-core machine; the training and evaluation
    loops keep at most `steps.InFlight().limit` steps unfinished, as this loop does."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", QUEUED_STEPS], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RESULT 2 200" in proc.stdout
