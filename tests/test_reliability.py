"""Reliability: kills inside checkpoint writes, a second run on a workdir in use, a stale lock,
a full disk, a NaN loss, and bad input: the fast part of tools/fault_injection.py.

The run under test and its uninterrupted record (the `uninterrupted` fixture) are
tests/test_resume.py's, from tools/fault_injection.py; tests/test_resume.py covers kills at the
loop's points, SIGTERM and damaged checkpoints. The oracle is Orbax's own CheckpointManager and
the uninterrupted run, bitwise.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcnn import callbacks, cli
from jaxcnn import config as config_lib
from jaxcnn.errors import UserError
from jaxcnn.train import fit, loop
from conftest import REPO
from fault_injection import (_arrays, file_size_limit, launch, make_config, record, start, steps_of, unreadable,
                             wait_for)


def test_kills_inside_checkpoint_writes_a_second_run_and_a_stale_lock(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    # Killed inside the write of checkpoint 60: its `state` item is written, its other items and
    # the commit are not. What is left must read back, and the resume redoes step 60.
    proc = launch(workdir, "item_written", 60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert steps_of(workdir) == [20, 40] and unreadable(str(workdir)) == []
    # The resume runs in the background and is killed while Orbax deletes old step 40 (after
    # checkpoint 80: max_to_keep=2). Meanwhile a second run on the same workdir is refused.
    started = tmp_path / "started"
    first = start(workdir, started, "mid_delete", 40)
    wait_for(started, first)
    assert cli.main(["train", "--workdir", str(workdir)]) == 2
    first.communicate(timeout=600)
    assert first.returncode == -signal.SIGKILL
    # Half of step 40's files are gone, but out of sight (jaxcnn deletes old steps after moving
    # them aside): every step Orbax lists restores.
    assert 40 not in steps_of(workdir) and unreadable(str(workdir)) == []
    # The killed run's lock file still names it; its kernel lock died with it, so this run takes over.
    holder = (workdir / "lock").read_text()
    assert f"pid {first.pid} " in holder
    fit(make_config(), str(workdir))
    assert f"pid {os.getpid()} " in (workdir / "lock").read_text()
    got = record(workdir)
    for key in uninterrupted:
        assert got[key] == uninterrupted[key], key


def test_the_second_run_names_the_first_and_changes_nothing(tmp_path, capsys):
    """The refusal itself, against a lock held by another process (no training needed)."""
    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom jaxcnn.train import workdir\n"
                               "with workdir.lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
                               str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = sorted(os.listdir(workdir))
        assert cli.main(["train", "--workdir", str(workdir), "--config.epochs=1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert re.search(rf"workdir .* is in use by another run \(pid {holder.pid} on \S+, since .*\); wait for it",
                         err), err
        assert sorted(os.listdir(workdir)) == before == ["lock"]  # the first run's workdir is untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_checkpoints(tmp_path, digits_run):
    workdir = tmp_path / "run"
    shutil.copytree(digits_run, workdir)
    directory = str(workdir / "checkpoints")
    before = {s: _arrays(ocp.CheckpointManager(directory).restore(s)["state"]) for s in steps_of(str(workdir))}
    proc = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "train", "--workdir", str(workdir), "--config.epochs=3",
                           "--config.callbacks.tensorboard.enabled=false"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, preexec_fn=file_size_limit(100_000))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert re.fullmatch(rf"jaxcnn: error: cannot write a checkpoint in {re.escape(directory)}: File too large \(an "
                        r"array of [\d,]+ bytes, a file-size limit of 100,000\); free space on that disk \(or raise "
                        r"the quota or file-size limit\), then run the same command again to resume from the intact "
                        r"step 162", err[0]), err[0]
    assert sorted(os.listdir(directory)) == ["162", "81"]  # no temporary folder of the failed step
    after = {s: _arrays(ocp.CheckpointManager(directory).restore(s)["state"]) for s in steps_of(str(workdir))}
    assert after == before


@pytest.mark.parametrize("terminate", [True, False], ids=["terminate_on_nan", "checked_at_saves"])
def test_a_nan_loss_names_its_step_and_the_last_good_checkpoint(tmp_path, capsys, terminate):
    config = config_lib.get_config()
    config.epochs, config.verbose, config.checkpoint_every_steps = 2, 2 if terminate else 0, 20
    config.optimizer, config.learning_rate = "sgd", 0.01
    config.callbacks.tensorboard.enabled = False
    config.callbacks.terminate_on_nan = terminate
    jump = callbacks.LearningRateScheduler(lambda epoch, lr: 1e30 if epoch >= 1 else 0.01)  # diverges in epoch 2
    workdir = tmp_path / "run"
    with pytest.raises(UserError) as error:
        loop.fit(config, str(workdir), callbacks=[jump])
    if terminate:  # TerminateOnNaN read every batch's loss: the exact step (its 0-based batch + 1)
        batch = int(re.search(r"Batch (\d+): Invalid loss", capsys.readouterr().out).group(1))
        where = f"at step {batch + 1}"
    else:  # read at the checkpoint every 20 steps: between the last one and this one
        where = "between steps 82 and 100"
    manager = ocp.CheckpointManager(str(workdir / "checkpoints"))
    assert manager.latest_step() == 81
    assert re.fullmatch(
        rf"the training loss became (nan|inf) in epoch 2 \({where}\); the last good checkpoint is step 81 in "
        rf"{re.escape(str(workdir / 'checkpoints'))}; lower --config.learning_rate or check the data, then train "
        "again with a new --workdir", str(error.value)), str(error.value)
    for step in manager.all_steps():
        assert all(np.isfinite(leaf).all() for leaf in _leaves(manager.restore(step)["state"]["params"]))
    assert not (workdir / "eval").exists()  # NaN weights are not evaluated


def _leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("config_text,message", [
    ("def get_config():\n    return 1 / 0\n", r"config file .* raised ZeroDivisionError: division by zero; fix the file"),
    ("from jaxcnn.config import get_config as base\ndef get_config():\n    c = base(); c.model = 'alexnet'; return c\n",
     r"model 'alexnet' cannot take \(8, 8, 1\) inputs of 'digits'"),
])
def test_a_bad_config_file_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, config_text, message):
    path = tmp_path / "experiment.py"
    path.write_text(config_text)
    assert cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert sorted(os.listdir(tmp_path)) == ["experiment.py"]


@pytest.mark.slow
def test_every_injected_fault_is_survived(tmp_path):
    """The whole of tools/fault_injection.py (about half an hour on 2 busy cores)."""
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "fault_injection.py"), "--out", str(summary)],
                          capture_output=True, text=True, cwd=REPO, timeout=3 * 3600)
    rows = json.loads(summary.read_text())["rows"]
    assert len([r for r in rows if r["fault"].startswith("kill")]) >= 10
    failed = [r for r in rows if r["survived"] != r["times"]]
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:])
