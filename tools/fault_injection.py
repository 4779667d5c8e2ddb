"""Fault injection: kill, preempt, starve and feed bad input to jaxcnn, and check what survives.

    python tools/fault_injection.py                      # everything (about 15 min on 2 busy cores)
    python tools/fault_injection.py --only kill --repeat 2 --out fault_injection.json

Each kill lands at a chosen point, not at a random time (tests/test_resume.py kills at random
times): the run under test kills itself (SIGKILL, which no handler can intercept) when it
reaches the point, through a callback for the loop's points and by wrapping Orbax's own
functions for the points inside a checkpoint write. Nothing in jaxcnn knows about these hooks;
they live in the child program below. Then the same command resumes the run to its end, and
the run must be bitwise the run that was never interrupted (parameters, optimizer state, every
checkpoint, metrics.jsonl, training.csv and the test evaluation, read back with Orbax's own
CheckpointManager), and its workdir must stay readable after every kill (every step Orbax lists
restores).

The run is tests/test_resume.py's: 3 epochs of 81 steps on digits with dropout, gradient
accumulation, EMA, ReduceLROnPlateau, EarlyStopping(restore_best_weights), ModelCheckpoint every
50 steps, CSVLogger, and checkpoints every 20 steps. The summary goes to --out (JSON) and the
Markdown table of the README's Reliability section is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_CODE = '''
def make_config(epochs=3):
    from jaxcnn import config as config_lib
    c = config_lib.get_config()
    c.verbose, c.epochs = 0, epochs
    c.model_kwargs.dropout_rate = 0.25
    c.checkpoint_every_steps = 20
    c.optimization.ema_momentum = 0.9
    c.optimization.gradient_accumulation_steps = 2
    c.callbacks.tensorboard.enabled = False  # spares each process TensorFlow's import
    c.callbacks.reduce_lr_on_plateau.update(enabled=True, patience=0, factor=0.5, min_delta=1.0)
    c.callbacks.early_stopping.update(enabled=True, patience=10, restore_best_weights=True)
    c.callbacks.model_checkpoint.update(enabled=True, save_freq="50", max_to_keep=2)
    c.callbacks.csv_logger.enabled = True
    return c
'''
exec(CONFIG_CODE)

# The run under test. argv: workdir, point, at, signal. It kills itself at `point`:
#   batch S          before step S (0-based: S steps done)   epoch_end E   after epoch E's callbacks decided
#   before_save S    after the logs, before checkpoint S     train_end     after training, before the evaluation
#   item_written S   inside checkpoint S: its `state` item written, the others and the commit not
#   before_commit S  checkpoint S fully written, not yet renamed into place
#   after_commit S   checkpoint S renamed into place, before Orbax records it and deletes old steps
#   best_commit S    ModelCheckpoint's best checkpoint S written, not renamed into place
#   mid_delete S     while Orbax deletes the old step S (half of its files gone)
#   restore          while a resumed run restores its checkpoint
# STARTED_FILE (env): created at the first step, so a parent knows the run is training.
CHILD = CONFIG_CODE + '''
import os, signal, sys
from jaxcnn.train import Callback, fit
workdir, point, at, sig = sys.argv[1], sys.argv[2], int(sys.argv[3]), getattr(signal, sys.argv[4])

def die():
    os.kill(os.getpid(), sig)

class Injector(Callback):
    started = False

    def on_train_batch_end(self, step, logs=None):
        if not self.started and os.environ.get("STARTED_FILE"):
            self.started = True
            open(os.environ["STARTED_FILE"], "w").close()

    def on_train_batch_begin(self, step, logs=None):
        if point == "batch" and step == at:
            die()

    def on_epoch_end(self, epoch, logs=None):
        if point == "epoch_end" and epoch == at:
            die()

    def on_train_end(self, logs=None):
        if point == "train_end":
            die()

if point in ("item_written", "before_commit", "after_commit", "best_commit"):
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def wrapped(self, *args, **kwargs):
        final = self.get_final()
        folder = "best_checkpoints" if point == "best_commit" else "checkpoints"
        step_dir = final.name == str(at) and final.parent.name == folder
        item = point == "item_written" and final.name == "state" and final.parent.name.startswith(f"{at}.orbax")
        if step_dir and point in ("before_commit", "best_commit"):
            die()
        await finalize(self, *args, **kwargs)
        if (step_dir and point == "after_commit") or item:
            die()
    atomicity.AtomicRenameTemporaryPath.finalize = wrapped

if point == "mid_delete":  # wherever the deletion happens: in place, or after a move (jaxcnn's)
    import shutil
    rmtree = shutil.rmtree

    def wrapped(path, *args, **kwargs):
        path = str(path)
        if os.path.basename(path) == str(at) or os.path.isdir(os.path.join(path, str(at))):
            target = path if os.path.basename(path) == str(at) else os.path.join(path, str(at))
            files = sorted(os.path.join(r, f) for r, _, names in os.walk(target) for f in names)
            for f in files[: len(files) // 2]:
                os.remove(f)
            die()
        rmtree(path, *args, **kwargs)
    shutil.rmtree = wrapped
    from orbax.checkpoint._src.path import deleter
    delete = deleter.StandardCheckpointDeleter._delete_step_permanently

    def delete_in_place(self, step, target):  # Orbax's own deletion, when jaxcnn lets it delete in place
        if step == at:
            wrapped(str(target))
        delete(self, step, target)
    deleter.StandardCheckpointDeleter._delete_step_permanently = delete_in_place

if point == "before_save":
    from jaxcnn.train import loop
    save = loop.Trainer._save

    def wrapped(self, *args, **kwargs):
        if int(self.state.step) == at:
            die()
        return save(self, *args, **kwargs)
    loop.Trainer._save = wrapped

if point == "restore":
    from jaxcnn.train import checkpoint
    restore_items = checkpoint.Checkpointer.restore_items

    def wrapped(self, step, templates):
        restored = restore_items(self, step, templates)
        die()
    checkpoint.Checkpointer.restore_items = wrapped

fit(make_config(), workdir, callbacks=[Injector()])
'''


def child_env(**extra) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", **extra}


def launch(workdir, point="none", at=-1, sig="SIGKILL", **popen) -> subprocess.CompletedProcess:
    """Runs the run under test in `workdir` (resuming it), killing it at `point`."""
    return subprocess.run([sys.executable, "-c", CHILD, str(workdir), point, str(at), sig], capture_output=True,
                          text=True, cwd=REPO, env=child_env(), timeout=900, **popen)


def start(workdir, started_file, point="none", at=-1, sig="SIGKILL") -> subprocess.Popen:
    """Starts the run in the background; `started_file` appears once it trains."""
    return subprocess.Popen([sys.executable, "-c", CHILD, str(workdir), point, str(at), sig], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=child_env(STARTED_FILE=str(started_file)))


def wait_for(path, proc: subprocess.Popen) -> None:
    while not os.path.exists(path) and proc.poll() is None:
        time.sleep(0.02)


# --- what a run leaves ----------------------------------------------------------------------

def record(workdir) -> dict:
    """What a run leaves that must not depend on how often it was interrupted."""
    import orbax.checkpoint as ocp
    workdir = str(workdir)
    out = {}
    for name in ("checkpoints", "best_checkpoints"):
        manager = ocp.CheckpointManager(os.path.join(workdir, name))
        steps = manager.all_steps()
        out[name] = {step: _arrays(manager.restore(step)["state"]) for step in steps}
        out[name + "_metrics"] = {step: manager.metrics(step) for step in steps}
        out[name + "_meta"] = {step: _without_time(manager.restore(step)["meta"]) for step in steps}
    out["metrics.jsonl"] = [_without_time(json.loads(line)) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    out["training.csv"] = [line.split(",")[:4] + line.split(",")[5:]
                           for line in open(os.path.join(workdir, "training.csv")).read().splitlines()]
    out["eval"] = _without_time(json.load(open(os.path.join(workdir, "eval", "test.json"))))
    return out


def _arrays(tree):
    import jax
    return [(str(path), np.asarray(leaf).dtype.str, np.asarray(leaf).tobytes())
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _without_time(obj):
    if isinstance(obj, dict):
        return {k: _without_time(v) for k, v in obj.items() if k not in ("seconds", "wall_seconds", "cpu_seconds", "epoch_seconds")}
    return obj


def differences(got: dict, expected: dict) -> list[str]:
    """The parts of a run's record that differ from the uninterrupted run's."""
    return [key for key in expected if got.get(key) != expected[key]] + [k for k in got if k not in expected]


def unreadable(workdir) -> list[str]:
    """Checkpoint steps of `workdir` that Orbax lists but cannot restore, and a config.json that
    does not parse: what a kill must never leave."""
    import orbax.checkpoint as ocp
    bad = []
    if os.path.exists(os.path.join(workdir, "config.json")):
        try:
            json.load(open(os.path.join(workdir, "config.json")))
        except ValueError:
            bad.append("config.json")
    for name in ("checkpoints", "best_checkpoints"):
        if not os.path.isdir(os.path.join(workdir, name)):
            continue
        manager = ocp.CheckpointManager(os.path.join(workdir, name), options=ocp.CheckpointManagerOptions(
            read_only=True))
        for step in manager.all_steps():
            try:
                manager.restore(step)
            except Exception as e:  # any failure is what this looks for
                bad.append(f"{name}/{step} ({type(e).__name__})")
    return bad


def steps_of(workdir, name="checkpoints") -> list[int]:
    path = os.path.join(workdir, name)
    return sorted(int(s) for s in os.listdir(path) if s.isdigit()) if os.path.isdir(path) else []


# --- the faults -----------------------------------------------------------------------------

# (name, points killed in sequence on one workdir, how it is injected)
KILLS = [
    ("kill before the first step", [("batch", 0)], "SIGKILL before step 0 (nothing saved yet)"),
    ("kill mid-epoch between checkpoints", [("batch", 30)], "SIGKILL before step 30 (last checkpoint: 20)"),
    ("kill during an asynchronous save", [("batch", 101)], "SIGKILL 1 step after checkpoint 100 was handed to Orbax"),
    ("kill after the callbacks' epoch-end decisions", [("epoch_end", 1)],
     "SIGKILL in on_epoch_end of epoch 2, before its logs and checkpoint"),
    ("kill between the epoch's logs and its checkpoint", [("before_save", 162)],
     "SIGKILL after metrics.jsonl and training.csv got epoch 2, before checkpoint 162"),
    ("kill inside a checkpoint write: one item written", [("item_written", 60)],
     "SIGKILL when checkpoint 60's `state` item is written, its other items not"),
    ("kill inside a checkpoint write: before the commit", [("before_commit", 160)],
     "SIGKILL with checkpoint 160 written to its temporary folder, before the rename (the resume redoes "
     "best checkpoint 150, whose evictions were done)"),
    ("kill inside a checkpoint write: after the commit", [("after_commit", 120)],
     "SIGKILL right after checkpoint 120 was renamed into place"),
    ("kill inside a best-checkpoint write", [("best_commit", 150)],
     "SIGKILL before ModelCheckpoint's step 150 is renamed into best_checkpoints/"),
    ("kill while an old checkpoint is deleted", [("mid_delete", 40)],
     "SIGKILL with half of old step 40's files deleted (max_to_keep)"),
    ("kill while a resumed run restores", [("batch", 100), ("restore", -1)],
     "SIGKILL before step 100, then SIGKILL again inside the resume's restore"),
    ("kill after training, before the evaluation", [("train_end", -1)],
     "SIGKILL in on_train_end: trained, eval/ and plots not written"),
    ("kill four times in one run", [("batch", 15), ("before_commit", 60), ("epoch_end", 1), ("batch", 200)],
     "SIGKILL before step 15, inside checkpoint 60, at epoch 2's end, before step 200"),
]

COMMAND = "python tools/fault_injection.py --only {}"


def run_kills(names, repeat, expected, tmp) -> list[dict]:
    rows = []
    for name, points, how in KILLS:
        if names and not any(n in name for n in names):
            continue
        survived, times, problems = 0, [], []
        for i in range(repeat):
            known = len(problems)
            workdir = os.path.join(tmp, f"kill{len(rows)}-{i}")
            began = time.perf_counter()
            for point, at in points:
                proc = launch(workdir, point, at)
                if proc.returncode != -signal.SIGKILL:
                    problems.append(f"{point} {at}: exit {proc.returncode}: {proc.stderr[-300:]}")
                bad = unreadable(workdir) if os.path.isdir(workdir) else []
                if bad:
                    problems.append(f"after {point} {at}: unreadable {bad}")
            killed = time.perf_counter() - began
            proc = launch(workdir)
            if proc.returncode != 0:
                problems.append(f"resume: exit {proc.returncode}: {proc.stderr[-300:]}")
                continue
            diff = differences(record(workdir), expected)
            if diff:
                problems.append(f"resumed run differs in {diff}")
            survived += len(problems) == known
            times.append(round(time.perf_counter() - began, 1))
            print(f"  {name} #{i + 1}: killed after {killed:.1f} s, {'equal' if not diff else diff}", flush=True)
            shutil.rmtree(workdir, ignore_errors=True)
        rows.append({"fault": name, "how": how, "times": repeat, "survived": survived, "problems": problems,
                     "seconds": times,
                     "what survived": f"{survived}/{repeat} resumed runs bitwise equal to the uninterrupted run; "
                                      "every kill left a readable workdir" if survived == repeat and not problems
                     else "; ".join(problems)[:300],
                     "command": COMMAND.format(f'"{name}"')})
    return rows


def run_sigterm(repeat, expected, tmp) -> dict:
    """SIGTERM from outside mid-epoch: a checkpoint at the next step, exit 0, resume equal."""
    problems, delays, survived = [], [], 0
    for i in range(repeat):
        workdir, started = os.path.join(tmp, f"term{i}"), os.path.join(tmp, f"term{i}.started")
        proc = start(workdir, started)
        wait_for(started, proc)
        time.sleep(1.0 + i)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=600)[1]
        delays.append(round(time.perf_counter() - sent, 2))
        saved = re.search(r"saved a checkpoint at step (\d+)", err)
        if proc.returncode != 0 or not saved or int(saved.group(1)) not in steps_of(workdir):
            problems.append(f"exit {proc.returncode}: {err[-300:]}")
            continue
        if launch(workdir).returncode != 0 or differences(record(workdir), expected):
            problems.append("resume differs")
            continue
        survived += 1
        shutil.rmtree(workdir, ignore_errors=True)
    return {"fault": "preemption (SIGTERM mid-epoch)", "how": "SIGTERM from the parent 1-3 s into training",
            "times": repeat, "survived": survived, "problems": problems, "seconds_to_exit": delays,
            "what survived": (f"checkpoint at the next step, exit 0 {min(delays):.1f}-{max(delays):.1f} s after "
                              f"the signal; {survived}/{repeat} resumes bitwise equal") if delays else str(problems),
            "command": COMMAND.format("preemption")}


def run_storage(expected, tmp) -> list[dict]:
    """A truncated or deleted latest checkpoint, and a full disk."""
    import orbax.checkpoint as ocp
    rows = []
    base = os.path.join(tmp, "storage-base")
    assert launch(base, "batch", 162).returncode == -signal.SIGKILL  # checkpoints ..., 160, 162
    for how, damage in (("truncated", truncate), ("deleted item", _delete_item), ("deleted step", _delete_step)):
        workdir = os.path.join(tmp, f"storage-{how.replace(' ', '-')}")
        shutil.copytree(base, workdir)
        latest = steps_of(workdir)[-1]
        damage(os.path.join(workdir, "checkpoints", str(latest)))
        proc = launch(workdir)
        warned = "is corrupt" in proc.stderr and f"using step {steps_of(base)[-2]}" in proc.stderr
        equal = proc.returncode == 0 and not differences(record(workdir), expected)
        rows.append({"fault": f"latest checkpoint {how}", "times": 1, "survived": int(equal),
                     "how": {"truncated": "the largest array file of the latest step cut to half its size",
                             "deleted item": "the latest step's `state` folder removed",
                             "deleted step": "the latest step's whole folder removed"}[how],
                     "what survived": ("warning names the step, moved to corrupt_checkpoints/, previous step used; "
                                       if warned else "previous step used (nothing records the lost step, so no "
                                       "warning); ") + ("resume bitwise equal" if equal else f"FAILED: {proc.stderr[-300:]}"),
                     "command": COMMAND.format("storage")})
    # A full disk: a 1.5 MB tmpfs (root only), else a file-size limit (RLIMIT_FSIZE) below a checkpoint's size.
    workdir = os.path.join(tmp, "disk", "run")
    os.makedirs(os.path.dirname(workdir))
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs",
                                                     os.path.dirname(workdir)]).returncode == 0
    try:
        args = [sys.executable, "-m", "jaxcnn.cli", "train", "--workdir", workdir, "--config.verbose=0",
                "--config.callbacks.tensorboard.enabled=false"]
        if not mounted:
            assert subprocess.run(args + ["--config.epochs=1"], cwd=REPO, env=child_env()).returncode == 0
        before = {s: _arrays(ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).restore(s)["state"])
                  for s in steps_of(workdir)}
        proc = subprocess.run(args + ["--config.epochs=3"], capture_output=True, text=True, cwd=REPO,
                              env=child_env(), preexec_fn=None if mounted else file_size_limit(150_000))
        err = proc.stderr.strip().splitlines()
        kept = steps_of(workdir)
        intact = all(_arrays(ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).restore(s)["state"])
                     == before[s] for s in before) and kept
        leftovers = [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if not n.isdigit()]
        ok = proc.returncode == 2 and len(err) == 1 and ("No space left" in err[0] or "File too large" in err[0])
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", os.path.dirname(workdir)], check=True)
        resumed = subprocess.run(args + ["--config.epochs=3"], capture_output=True, text=True, cwd=REPO,
                                 env=child_env())
        rows.append({"fault": "full disk", "times": 1, "survived": int(ok and bool(intact) and not leftovers
                                                                       and resumed.returncode == 0),
                     "how": "workdir on a 1.5 MB tmpfs (a real ENOSPC)" if mounted else
                            "RLIMIT_FSIZE of 150 kB in the child (EFBIG), after a 1-epoch run",
                     "what survived": (f"exit {proc.returncode}, {len(err)} line: `{err[-1][:110]}...`; checkpoints "
                                       f"{kept} intact, no temporary folder left; after freeing space the same "
                                       f"command resumed (exit {resumed.returncode})"),
                     "command": COMMAND.format("storage"), "stderr": proc.stderr[:3000]})
    finally:
        if mounted:
            subprocess.run(["umount", os.path.dirname(workdir)])
    return rows


def file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk does
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def largest_array_file(step_dir):
    files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, "state")) for f in names]
    return max(files, key=os.path.getsize)


def truncate(step_dir):
    path = largest_array_file(step_dir)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _delete_item(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def _delete_step(step_dir):
    shutil.rmtree(step_dir)


def run_nan(tmp) -> dict:
    """A loss that becomes NaN in epoch 2 (the learning rate jumps to 1e30 there)."""
    code = CONFIG_CODE + '''
import sys
from jaxcnn import cli, callbacks
from jaxcnn.train import loop
c = make_config(2)
c.optimizer, c.learning_rate = "sgd", 0.01
c.callbacks.terminate_on_nan = sys.argv[2] == "terminate"
schedule = callbacks.LearningRateScheduler(lambda epoch, lr: 1e30 if epoch >= 1 else 0.01)
try:
    loop.fit(c, sys.argv[1], callbacks=[schedule])
except Exception as e:
    print(f"jaxcnn: error: {e}", file=sys.stderr)
    sys.exit(2)
'''
    out = []
    for variant in ("terminate", "plain"):
        workdir = os.path.join(tmp, f"nan-{variant}")
        proc = subprocess.run([sys.executable, "-c", code, workdir, variant], capture_output=True, text=True,
                              cwd=REPO, env=child_env())
        line = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        out.append((proc.returncode, line, steps_of(workdir), os.path.exists(os.path.join(workdir, "eval"))))
    ok = all(rc == 2 and "became nan" in line and "last good checkpoint is step" in line and not evaluated
             for rc, line, _, evaluated in out)
    return {"fault": "NaN loss", "times": 2, "survived": 2 if ok else 0,
            "how": "learning rate 1e30 from epoch 2 (LearningRateScheduler), with and without TerminateOnNaN",
            "what survived": f"exit {out[0][0]}: `{out[0][1][14:140]}...`; only finite checkpoints ({out[0][2]}), "
                             "no evaluation of NaN weights",
            "command": COMMAND.format("nan")}


def run_inputs(tmp) -> list[dict]:
    """Bad input through the console script: one line, exit 2, nothing written."""
    from PIL import Image
    src = os.path.join(tmp, "inputs")
    def tree(name, layout, size=(8, 8)):
        root = os.path.join(src, name)
        for folder, count in layout.items():
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            for i in range(count):
                Image.new("RGB", size[::-1], color=(i * 10,) * 3).save(os.path.join(root, folder, f"{i}.png"))
        return root
    corrupt = tree("corrupt", {"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1})
    open(os.path.join(corrupt, "train", "b", "broken.jpg"), "wb").write(b"\xff\xd8\xff\xe0 not a jpeg")
    empty = tree("empty", {"train/a": 2, "train/b": 0, "test/a": 1})
    sizes = tree("sizes", {"train/a": 2, "test/a": 1})
    tree("sizes", {"train/b": 2}, size=(6, 9))
    cifar = os.path.join(src, "cifar")
    os.makedirs(cifar)
    records = np.zeros((10000, 3073), np.uint8)
    records[17, 0] = 10
    open(os.path.join(cifar, "data_batch_1.bin"), "wb").write(records.tobytes())
    for name in ("data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"):
        open(os.path.join(cifar, name), "wb").close()
    raising = os.path.join(src, "raising.py")
    open(raising, "w").write("def get_config():\n    return 1 / 0\n")
    out, workdir = os.path.join(tmp, "inputs-out"), os.path.join(tmp, "inputs-run")
    cases = [
        ("corrupt JPEG", ["data", "prepare", "folder", "--source", corrupt, "--data_dir", out, "--name", "toy"]),
        ("empty class folder", ["data", "prepare", "folder", "--source", empty, "--data_dir", out, "--name", "toy"]),
        ("label out of range", ["data", "prepare", "cifar10", "--source", cifar, "--data_dir", out]),
        ("images of different sizes", ["data", "prepare", "folder", "--source", sizes, "--data_dir", out,
                                       "--name", "toy"]),
        ("wrong image shape for the model", ["train", "--workdir", workdir, "--config.model=alexnet"]),
        ("unknown config key", ["train", "--workdir", workdir, "--config.learnig_rate=0.1"]),
        ("wrong type in an override", ["train", "--workdir", workdir, "--config.epochs=3.5"]),
        ("a config file that raises", ["train", "--workdir", workdir, "--config", raising]),
    ]
    rows = []
    for name, args in cases:
        proc = subprocess.run([sys.executable, "-m", "jaxcnn.cli", *args], capture_output=True, text=True, cwd=REPO,
                              env=child_env())
        lines = proc.stderr.strip().splitlines()
        clean = not os.path.exists(workdir) and (not os.path.exists(out) or not os.listdir(out))
        ok = proc.returncode == 2 and len(lines) == 1 and clean
        rows.append({"fault": f"input: {name}", "times": 1, "survived": int(ok),
                     "how": "`jaxcnn " + " ".join(a.replace(tmp, "$TMP") for a in args) + "`",
                     "what survived": f"exit {proc.returncode}, {len(lines)} line, "
                                      f"{'nothing written' if clean else 'FILES WRITTEN'}: "
                                      f"`{lines[-1][14:150] if lines else ''}`",
                     "command": COMMAND.format("inputs")})
    return rows


def run_concurrency(expected, tmp) -> list[dict]:
    """A second run on a workdir in use, and the lock of a killed run."""
    workdir, started = os.path.join(tmp, "lock-run"), os.path.join(tmp, "lock.started")
    first = start(workdir, started)
    wait_for(started, first)
    second = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "train", "--workdir", workdir], capture_output=True,
                            text=True, cwd=REPO, env=child_env())
    first_err = first.communicate(timeout=900)[1]
    equal = first.returncode == 0 and not differences(record(workdir), expected)
    rows = [{"fault": "a second run on the same workdir", "times": 1,
             "survived": int(second.returncode == 2 and "in use by another run" in second.stderr and equal),
             "how": "`jaxcnn train --workdir W` while the run in W trains",
             "what survived": f"the second exits {second.returncode}: `{second.stderr.strip()[14:160]}...`; the first "
                              f"finishes {'bitwise equal to the uninterrupted run' if equal else 'DIFFERENT: ' + first_err[-200:]}",
             "command": COMMAND.format("concurrency")}]
    workdir, started = os.path.join(tmp, "stale-run"), os.path.join(tmp, "stale.started")
    first = start(workdir, started)
    wait_for(started, first)
    first.kill()
    first.wait()
    holder = open(os.path.join(workdir, "lock")).read()
    proc = launch(workdir)
    equal = proc.returncode == 0 and not differences(record(workdir), expected)
    rows.append({"fault": "the lock of a killed run", "times": 1, "survived": int(equal),
                 "how": "SIGKILL a training run; its lock file still names it; run again",
                 "what survived": f"the kernel dropped the dead run's flock, so the next run took the lock over "
                                  f"(the file named `{holder.strip()[:40]}`) and resumed "
                                  f"{'bitwise equal' if equal else 'DIFFERENT'}",
                 "command": COMMAND.format("concurrency")})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| fault | how it was injected | times | what survived | command |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['how']} | {r['times']} | {r['what survived']} | `{r['command']}` |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[],
                        help="groups (kill, preemption, storage, nan, inputs, concurrency) or words of a kill's name")
    parser.add_argument("--repeat", type=int, default=1, help="times each kill and the preemption are injected")
    parser.add_argument("--out", help="JSON summary")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)  # record() reads items without handlers: Orbax warns
    groups = {"kill", "preemption", "storage", "nan", "inputs", "concurrency"}
    wanted = set(args.only) & groups or (groups if not args.only else {"kill"})
    names = [n for n in args.only if n not in groups]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxcnn-faults-") as tmp:
        rows, expected = [], None
        if wanted & {"kill", "preemption", "storage", "concurrency"}:
            reference = os.path.join(tmp, "uninterrupted")
            proc = launch(reference)
            assert proc.returncode == 0, proc.stderr[-2000:]
            expected = record(reference)
            print(f"uninterrupted run: {time.perf_counter() - began:.0f} s", flush=True)
        groups = [("kill", lambda: run_kills(names, args.repeat, expected, tmp)),
                  ("preemption", lambda: [run_sigterm(args.repeat, expected, tmp)]),
                  ("storage", lambda: run_storage(expected, tmp)), ("nan", lambda: [run_nan(tmp)]),
                  ("inputs", lambda: run_inputs(tmp)), ("concurrency", lambda: run_concurrency(expected, tmp))]
        for group, run in groups:
            if group in wanted:
                try:
                    rows += run()
                except Exception as e:  # a broken group is a row that failed, not a lost summary
                    rows.append({"fault": group, "how": "", "times": 1, "survived": 0, "command": COMMAND.format(group),
                                 "what survived": f"the injection itself failed: {type(e).__name__}: {e}"[:300]})
                print(f"{group} done at {time.perf_counter() - began:.0f} s", flush=True)
    summary = {"rows": rows, "seconds": round(time.perf_counter() - began), "all_survived":
               all(r["survived"] == r["times"] for r in rows)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
    print(markdown(rows))
    print(f"{sum(r['survived'] for r in rows)}/{sum(r['times'] for r in rows)} injections survived "
          f"in {summary['seconds']} s")
    sys.exit(0 if summary["all_survived"] else 1)


if __name__ == "__main__":
    main()
