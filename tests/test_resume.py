"""Exact resume: SIGKILL at any point, SIGTERM, and damaged checkpoints.

The run under test uses every piece of state a resume must restore: dropout (RNG),
gradient accumulation, an EMA of the weights, ReduceLROnPlateau (its scale lives in the
optimizer state), EarlyStopping with restore_best_weights (arrays in the checkpoint),
ModelCheckpoint every 50 steps and CSVLogger, with checkpoints every 20 steps (4 per
epoch of 81 steps) besides the epoch ends. The oracle is the same run uninterrupted:
checkpoint arrays bitwise equal (read with Orbax's own API), logs and evaluation equal
except their wall-clock times.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcnn import config as config_lib, inference
from jaxcnn.errors import UserError
from jaxcnn.train import Callback, Trainer, checkpoint, fit
from conftest import REPO

# The run under test, the child program that kills itself at a chosen hook, and the record
# of what a run leaves live in tools/fault_injection.py (which injects many more faults).
from fault_injection import (CHILD as RUN, launch, make_config, record, _arrays, _without_time,
                             largest_array_file, truncate)


def assert_same_run(got: dict, expected: dict):
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key], key


def test_killed_and_terminated_anywhere_then_resumed_ends_bitwise_equal(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    # SIGKILL inside epoch 2, right after the step-100 checkpoint was handed to Orbax (which
    # writes it asynchronously): the resume starts from step 100 or, if the write was cut
    # short, from step 81 (the end of epoch 1).
    proc = launch(workdir, "batch", 100)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert {int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()} in ({81, 100}, {80, 81})
    # SIGKILL at the end of epoch 2, after the callbacks decided and before its checkpoint:
    # the resumed run redoes the last steps and the callbacks' decisions.
    proc = launch(workdir, "epoch_end", 1)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert max(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) in (140, 160)  # not 162
    # SIGTERM inside epoch 3: a checkpoint at the next step, then a clean exit.
    proc = launch(workdir, "batch", 190, "SIGTERM")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "received SIGTERM: saved a checkpoint at step 191" in proc.stderr
    assert 191 in ocp.CheckpointManager(str(workdir / "checkpoints")).all_steps()
    # The last resume, in this process, runs to the end.
    fit(make_config(), str(workdir))
    assert_same_run(record(workdir), uninterrupted)
    learning_rates = [r["lr"] for r in uninterrupted["metrics.jsonl"]]
    assert learning_rates[2] == learning_rates[0] / 2  # ReduceLROnPlateau acted: its state mattered


@pytest.mark.slow
def test_sigkill_at_random_times_then_resume_ends_bitwise_equal(tmp_path, uninterrupted):
    """Kills the process at random times after its first step (compiled), up to six times,
    then lets it finish. The delays and the steps reached are in the failure message."""
    workdir, rng, kills = tmp_path / "run", random.Random(), []
    started = tmp_path / "started"
    while True:
        started.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", RUN, str(workdir), "none", "-1", "SIGKILL"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "JAX_PLATFORMS": "cpu", "STARTED_FILE": str(started)})
        while not started.exists() and proc.poll() is None:
            time.sleep(0.02)
        delay = rng.uniform(0.0, 2.0) if len(kills) < 6 else None
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
            kills.append((round(delay, 2), steps))
            continue
        assert proc.returncode == 0, (kills, proc.stderr.read()[-2000:])
        break
    assert len(kills) >= 2, kills  # the run outran the kills
    try:
        assert_same_run(record(workdir), uninterrupted)
    except AssertionError as e:
        raise AssertionError(f"after kills (delay, checkpoints) {kills}: {e}") from e
    print("kills (delay s, checkpoint steps after the kill):", kills)


# --- damaged checkpoints ----------------------------------------------------------------------

def short_config(epochs):
    c = config_lib.get_config()
    c.verbose, c.epochs = 0, epochs
    c.callbacks.tensorboard.enabled = False
    return c


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A 2-epoch run (checkpoints at steps 81 and 162) and the same run trained to 3 epochs."""
    base = tmp_path_factory.mktemp("two") / "run"
    fit(short_config(2), str(base))
    straight = tmp_path_factory.mktemp("three") / "run"
    fit(short_config(3), str(straight))
    return base, straight


def overwrite(step_dir):
    """Same size, other bytes: Orbax reads it back without an error; the fingerprint does not match."""
    path = largest_array_file(step_dir)
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 256] = bytes(255 - b for b in data[middle:middle + 256])
    open(path, "wb").write(bytes(data))


def delete_state(step_dir):
    shutil.rmtree(step_dir / "state")


def garble_meta(step_dir):
    (step_dir / "meta" / "metadata").write_text('{"epoch": 2, "hist')


@pytest.mark.parametrize("damage", [truncate, overwrite, delete_state, garble_meta], ids=lambda f: f.__name__)
def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, two_epochs, damage, capsys):
    base, straight = two_epochs
    workdir = tmp_path / "run"
    shutil.copytree(base, workdir)
    damage(workdir / "checkpoints" / "162")
    history = fit(short_config(3), str(workdir))
    err = capsys.readouterr().err
    assert f"checkpoint {workdir / 'checkpoints' / '162'} is corrupt" in err and "using step 81" in err, err
    assert (workdir / "corrupt_checkpoints" / "checkpoints-162").is_dir()  # kept for inspection, out of the way
    assert history.epoch == [0, 1, 2]
    got, expected = record_without_best(workdir), record_without_best(straight)
    assert got == expected


def record_without_best(workdir):
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    return {"state": {s: _arrays(manager.restore(s)["state"]) for s in manager.all_steps()},
            "metrics": [_without_time(json.loads(line)) for line in open(os.path.join(workdir, "metrics.jsonl"))],
            "eval": _without_time(json.load(open(os.path.join(workdir, "eval", "test.json"))))}


def test_when_no_checkpoint_is_intact_the_run_stops_and_moves_nothing(tmp_path, two_epochs):
    workdir = tmp_path / "run"
    shutil.copytree(two_epochs[0], workdir)
    truncate(workdir / "checkpoints" / "162")
    garble_meta(workdir / "checkpoints" / "81")
    with pytest.raises(UserError, match="no checkpoint in .* can be restored .*step 162: .*step 81: "):
        fit(short_config(3), str(workdir))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["162", "81"]
    assert not (workdir / "corrupt_checkpoints").exists()


def test_reading_checkpoints_for_evaluation(tmp_path, two_epochs):
    from jaxcnn.train import Trainer, checkpoint
    trainer = Trainer(short_config(3))
    state, meta = checkpoint.restore(str(two_epochs[0]), trainer.state)
    assert int(state.step) == 162 and meta["epoch"] == 2
    state, meta = checkpoint.restore(str(two_epochs[0]), trainer.state, step=81)
    assert int(state.step) == 81
    with pytest.raises(UserError, match="no best checkpoint in .*model_checkpoint.enabled=true"):
        checkpoint.restore(str(two_epochs[0]), trainer.state, which="best")
    with pytest.raises(UserError, match="no step 7 in"):
        checkpoint.restore(str(two_epochs[0]), trainer.state, step=7)


# --- a run in phases ----------------------------------------------------------------------

def phased_config():
    """Two phases of one run: the conv layers frozen, Adam 1e-3 (1 epoch); then every layer
    trained with Adam on a cosine schedule from 1e-2 to 1e-3 (1 epoch). Dropout, accumulation, EMA
    and ReduceLROnPlateau (which halves the rate at every epoch end) as in the run above, and
    ModelCheckpoint."""
    c = short_config(2)
    c.model_kwargs.dropout_rate = 0.25
    c.checkpoint_every_steps = 40
    c.optimization.ema_momentum = 0.9
    c.optimization.gradient_accumulation_steps = 2
    c.callbacks.reduce_lr_on_plateau.update(enabled=True, patience=0, factor=0.5, min_delta=1.0)
    c.callbacks.model_checkpoint.update(enabled=True, max_to_keep=2)  # each epoch's, best first
    c.phases = ({"epochs": 1, "optimization.freeze": ("conv*",)},
                {"epochs": 1, "learning_rate": 1e-2, "schedule": "cosine", "lr_end_factor": 0.1})
    return c


class Interrupt(Exception):
    pass


class InterruptAt(Callback):
    """Ends the run before step `step` (as a kill would, once the checkpoints it saved are written)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_begin(self, step, logs=None):
        if step == self.step:
            raise Interrupt


class LearningRates(Callback):
    def __init__(self):
        self.rates = {}

    def on_train_batch_begin(self, step, logs=None):
        if step in (80, 81, 121):
            self.rates[step] = self.trainer.learning_rate


def test_a_run_interrupted_at_the_phase_boundary_and_in_phase_two_resumes_bitwise_equal(tmp_path):
    straight, rates = tmp_path / "straight", LearningRates()
    fit(phased_config(), str(straight), callbacks=[rates])
    expected = record_without_best(straight)
    workdir = tmp_path / "run"
    # At the boundary: phase 1 done (its checkpoint 81 holds phase 1's optimizer state), phase 2
    # not started; then inside phase 2 (checkpoint 120 holds phase 2's).
    reader = Trainer(phased_config())
    for step, last, phase in ((81, 81, 0), (130, 120, 1)):
        with pytest.raises(Interrupt):
            fit(phased_config(), str(workdir), callbacks=[InterruptAt(step)])
        state, meta = checkpoint.restore(str(workdir), reader.state_template)  # the step's phase's structure
        assert int(state.step) == last and meta["phase"] == phase
    fit(phased_config(), str(workdir))
    assert record_without_best(workdir) == expected
    assert [m["phase"] for m in expected["metrics"]] == [1, 2]
    # ReduceLROnPlateau halved phase 1's rate at its end; phase 2 starts at its own rate (the scale
    # back at 1), its cosine over its 40 updates (81 steps / 2) restarted: 20 done at step 121.
    assert rates.rates[80] == pytest.approx(1e-3) and rates.rates[81] == pytest.approx(1e-2)
    assert rates.rates[121] == pytest.approx(1e-2 * (0.9 * 0.5 * (1 + np.cos(np.pi * 20 / 40)) + 0.1), rel=1e-5)
    assert expected["metrics"][1]["lr"] == pytest.approx(1e-3)  # the cosine's end (logged before a halving)
    assert inference.load_run(str(straight)).step == 162  # `jaxcnn evaluate`: phase 2's optimizer state
    for step in (81, 162):  # ModelCheckpoint's, one of each phase
        state, meta = checkpoint.restore(str(straight), reader.state_template, which="best", step=step)
        assert int(state.step) == step and meta["phase"] == (step == 162)
