"""Keras-style callbacks for the fit loop (public as `jaxcnn.callbacks`).

A callback sees the trainer (`self.trainer`: state, config, workdir, the `stop_training`
flag, `learning_rate` and `set_learning_rate`) and the loop's `params` (epochs, steps,
batch_size, verbose). Hooks receive Keras' arguments: a 0-based `epoch` index and a
`logs` dict with `loss`, `accuracy`, `val_loss`, `val_accuracy`, `learning_rate`; batch
hooks get the global step (batches since the start of training).

Batch hooks get `LazyLogs`: reading a value copies the running means from the device,
so a callback that never reads costs no device-to-host transfer.

Each decision of EarlyStopping, ReduceLROnPlateau and ModelCheckpoint is Keras' own
(keras.callbacks, 3.15), including its comparisons in float32; tests/test_callbacks.py
feeds both the same metric sequences. A callback's state (`state_dict`) is saved in every
checkpoint and restored on resume, so a resumed run decides as the uninterrupted one.

Callbacks run on every process of a multi-host run (their computations may be
collective); files are written by process 0 only.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import UserError

# Keras' log names -> the workdir's metrics.jsonl names (../shared/DESIGN.md).
JSONL_NAMES = {"learning_rate": "lr", "loss": "train_loss", "accuracy": "train_accuracy",
               "val_loss": "val_loss", "val_accuracy": "val_accuracy", "seconds": "seconds"}
# Metrics `mode='auto'` maximizes (Keras reads the direction off its metric objects).
MAXIMIZED = ("accuracy", "auc", "precision", "recall", "f1_score")


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


class Callback:
    """Base class: override any hook. Stateful callbacks also override `state_dict` and
    `load_state_dict` (JSON values), so resuming restores them."""

    trainer = None
    params: dict = {}

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch: int, logs=None): ...
    def on_epoch_end(self, epoch: int, logs=None): ...
    def on_train_batch_begin(self, step: int, logs=None): ...
    def on_train_batch_end(self, step: int, logs=None): ...

    def state_dict(self) -> dict:
        """What the callback must remember across a resume (JSON-serializable)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores `state_dict()`; called after `on_train_begin` when resuming."""

    def array_state(self):
        """Arrays to checkpoint with the run (a pytree), or None."""
        return None

    def load_array_state(self, arrays) -> None: ...

    def array_template(self):
        """The structure of `array_state()` to restore into, or None."""
        return None


class LazyLogs(Mapping):
    """Running train metrics of the epoch so far, fetched from the device on first read."""

    def __init__(self, fetch: Callable[[], dict]):
        self._fetch, self._values = fetch, None

    def _get(self) -> dict:
        if self._values is None:
            self._values = self._fetch()
        return self._values

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return len(self._get())


class CallbackList:
    def __init__(self, callbacks, trainer, params: dict):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_trainer(trainer)
            cb.set_params(params)
        # Batch hooks are called only on callbacks that override them.
        self._batch_begin = [cb for cb in self.callbacks
                             if type(cb).on_train_batch_begin is not Callback.on_train_batch_begin]
        self._batch_end = [cb for cb in self.callbacks
                           if type(cb).on_train_batch_end is not Callback.on_train_batch_end]

    @property
    def wants_batch_end(self) -> bool:
        return bool(self._batch_end)

    def keyed(self) -> dict[str, Callback]:
        """Callbacks by a stable key: the class name, numbered from the second of a class on."""
        out, seen = {}, collections.Counter()
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] += 1
            out[name if seen[name] == 1 else f"{name}_{seen[name]}"] = cb
        return out

    def state_dicts(self) -> dict:
        return {key: state for key, cb in self.keyed().items() if (state := cb.state_dict())}

    def array_states(self) -> dict:
        return {key: arrays for key, cb in self.keyed().items() if (arrays := cb.array_state()) is not None}

    def array_templates(self) -> dict:
        return {key: t for key, cb in self.keyed().items() if (t := cb.array_template()) is not None}

    def load_states(self, states: dict, arrays: dict | None = None) -> None:
        for key, cb in self.keyed().items():
            if key in states:
                cb.load_state_dict(states[key])
            if arrays and key in arrays:
                cb.load_array_state(arrays[key])

    def on_train_begin(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, step, logs=None):
        for cb in self._batch_begin:
            cb.on_train_batch_begin(step, logs)

    def on_train_batch_end(self, step, logs=None):
        for cb in self._batch_end:
            cb.on_train_batch_end(step, logs)


# --- logging ----------------------------------------------------------------------------

class History(Callback):
    """Keras' History: `history.history[name]` is the per-epoch list, `history.epoch` the indices.

    A resumed run's History holds every epoch, including those before the resume.
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.history = {k: list(v) for k, v in self.trainer.history.items()}
        self.epoch = list(range(self.trainer.initial_epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def format_logs(logs: Mapping) -> str:
    parts = []
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if k in logs:
            parts.append(f"{k}: {logs[k]:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr: {logs['learning_rate']:.3g}")
    return " - ".join(parts)


class ProgbarLogger(Callback):
    """Keras' verbosity: 1 a progress bar (ETA, images/s, running loss) and a line per epoch,
    2 one line per epoch, 0 silent. The bar reads metrics every `log_every_steps` steps."""

    def __init__(self, verbose: int = 1, log_every_steps: int = 50, stream=None):
        self.verbose, self.log_every_steps = verbose, log_every_steps
        self.stream = stream or sys.stdout
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if self.verbose == 1:
            from tqdm.auto import tqdm
            done = getattr(self.trainer, "epoch_start_batch", 0) * self.params["batch_size"]
            self._bar = tqdm(total=self.params["steps"] * self.params["batch_size"], initial=done, unit="img",
                             unit_scale=True, desc=f"Epoch {epoch + 1}/{self.params['epochs']}", leave=False,
                             file=sys.stderr, dynamic_ncols=True)

    def on_train_batch_end(self, step, logs=None):
        if self._bar is None:
            return
        self._bar.update(self.params["batch_size"])
        if (step + 1) % self.log_every_steps == 0:
            self._bar.set_postfix(loss=f"{logs['loss']:.4f}", accuracy=f"{logs['accuracy']:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.verbose in (1, 2):
            seconds = (logs or {}).get("seconds", time.perf_counter() - self._start)
            print(f"Epoch {epoch + 1}/{self.params['epochs']} - {seconds:.1f}s - {format_logs(logs or {})}",
                  file=self.stream, flush=True)


def _rewrite(path: str, text: str) -> None:
    """Replaces a file's content atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _restored_epochs(trainer) -> list[dict]:
    """The logs of the epochs a resumed run restored from its checkpoint."""
    history = trainer.history
    return [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(trainer.initial_epoch)]


class MetricsLogger(Callback):
    """Writes `metrics.jsonl`: one JSON object per epoch (epoch, step, lr, train_loss,
    train_accuracy, val_loss, val_accuracy, seconds). `epoch` counts completed epochs."""

    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, logs=None):
        # Rewrite from the restored history, so a resumed file never holds epochs that
        # the checkpoint does not (e.g. after a kill between the two writes).
        if is_primary():
            steps = self.trainer.steps_per_epoch
            _rewrite(self.path, "".join(self._line(i, logs, steps) for i, logs in enumerate(_restored_epochs(self.trainer))))

    @staticmethod
    def _line(epoch: int, logs: Mapping, steps_per_epoch: int) -> str:
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch}
        record.update({JSONL_NAMES.get(k, k): v for k, v in logs.items()})
        return json.dumps(record) + "\n"

    def on_epoch_end(self, epoch, logs=None):
        if is_primary():
            with open(self.path, "a") as f:
                f.write(self._line(epoch, logs or {}, self.trainer.steps_per_epoch))


class CSVLogger(Callback):
    """Keras' CSVLogger: `epoch` (0-based) and the sorted log keys, one row per epoch.

    A resumed run rewrites the file from its checkpoint's history first (as MetricsLogger
    does), so it holds each epoch once; `append=True` keeps an older file's rows (Keras).
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False):
        self.filename, self.sep, self.append = filename, separator, append
        self.keys = None
        self._file = None
        self._writer = None

    def on_train_begin(self, logs=None):
        self.keys, self._writer = None, None
        if not is_primary():
            return
        restored = _restored_epochs(self.trainer) if self.trainer is not None else []
        if restored:
            self._file = open(self.filename, "w", newline="")
            for epoch, epoch_logs in enumerate(restored):
                self._write_row(epoch, epoch_logs, header=True)
            return
        header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename) as f:
                header = not bool(len(f.readline()))
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._header = header

    def _write_row(self, epoch: int, logs: Mapping, header: bool) -> None:
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend([f"val_{k}" for k in self.keys])
        if self._writer is None:
            class Dialect(csv.excel):
                delimiter = self.sep
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self.keys, dialect=Dialect)
            if header:
                self._writer.writeheader()
        row = collections.OrderedDict({"epoch": epoch})
        row.update((k, logs.get(k, "NA")) for k in self.keys)
        self._writer.writerow(row)
        self._file.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self._file is not None:
            self._write_row(epoch, logs or {}, header=getattr(self, "_header", True))

    def on_train_end(self, logs=None):
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._writer = None


class TensorBoard(Callback):
    """TensorBoard event files in `log_dir/train` and `log_dir/validation` (as Keras lays
    them out, so train and validation curves overlay).

    - per epoch: loss, accuracy, learning_rate (train) and loss, accuracy (validation),
      at step = completed epochs;
    - `histogram_freq=N`: a histogram of every parameter every N epochs (Keras' rule:
      epochs whose 0-based index is a multiple of N);
    - `write_images=True`: the first training batch as the model sees it (after
      augmentation), up to `max_images` images, tag `inputs`;
    - `update_freq=N`: batch_loss and batch_accuracy every N steps (the running means of
      the epoch, as Keras' batch logs); 'epoch' writes none.
    """

    def __init__(self, log_dir: str, histogram_freq: int = 0, write_images: bool = False,
                 update_freq: int | str = "epoch", max_images: int = 8):
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and not (isinstance(update_freq, int) and update_freq > 0):
            raise UserError(f"TensorBoard update_freq must be 'epoch', 'batch' or a positive integer, "
                            f"got {update_freq!r}")
        self.log_dir, self.histogram_freq, self.write_images = log_dir, histogram_freq, write_images
        self.update_freq, self.max_images = update_freq, max_images
        self._writers = None

    def on_train_begin(self, logs=None):
        from clu import metric_writers
        if is_primary():
            self._writers = {name: metric_writers.SummaryWriter(os.path.join(self.log_dir, name))
                             for name in ("train", "validation")}
        if self.write_images and self.trainer.initial_epoch == 0 and getattr(self.trainer, "epoch_start_batch", 0) == 0:
            trainer = self.trainer
            batch = next(trainer.train_data.batches(trainer.shuffle_rng, 0))
            # This process's rows of the global batch: no collective needed to read them.
            images = np.asarray(batch["image"].addressable_shards[0].data)[: self.max_images]
            if self._writers is not None:
                self._writers["train"].write_images(0, {"inputs": np.clip(images, 0.0, 1.0)})
                self._writers["train"].flush()

    def on_train_batch_end(self, step, logs=None):
        if self.update_freq == "epoch" or (step + 1) % self.update_freq:
            return
        values = {f"batch_{k}": logs[k] for k in ("loss", "accuracy") if k in logs}
        if self._writers is not None:
            self._writers["train"].write_scalars(step + 1, values)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        histograms = None
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            from jaxcnn import optim
            params = self.trainer.state.params
            histograms = {optim.param_path(p): np.asarray(jax.device_get(w), np.float32)
                          for p, w in jax.tree_util.tree_flatten_with_path(params)[0]}
        if self._writers is None:
            return
        train = {k: logs[k] for k in ("loss", "accuracy", "learning_rate") if k in logs}
        val = {k[4:]: logs[k] for k in ("val_loss", "val_accuracy") if k in logs}
        self._writers["train"].write_scalars(epoch + 1, train)
        if histograms:
            self._writers["train"].write_histograms(epoch + 1, histograms)
        if val:
            self._writers["validation"].write_scalars(epoch + 1, val)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in (self._writers or {}).values():
            w.close()
        self._writers = None


class TerminateOnNaN(Callback):
    """Keras' TerminateOnNaN: stops at the first batch whose running loss is NaN or infinite
    (reading the loss each batch: one device-to-host copy per step), or raises with
    `raise_error=True`."""

    def __init__(self, raise_error: bool = False):
        self.raise_error = raise_error

    def on_train_batch_end(self, step, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (np.isnan(loss) or np.isinf(loss)):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {step}. Loss value: {loss}. "
                                   "Terminating training immediately.")
            if is_primary():
                print(f"Batch {step}: Invalid loss, terminating training", flush=True)
            self.trainer.stop_training = True


# --- decisions on a monitored metric -----------------------------------------------------

class MonitorCallback(Callback):
    """Keras' MonitorCallback: the direction of `monitor` and what counts as an improvement.

    Keras compares in float32 (its floatx): `float32(value - min_delta) < float32(best)`
    for 'min', with the sign of min_delta flipped for 'max'. `mode='auto'` minimizes losses
    and maximizes accuracy-like metrics; any other name needs an explicit mode.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", baseline=None, min_delta: float = 0.0):
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=2)
            mode = "auto"
        self.monitor, self.mode, self.best = monitor, mode, baseline
        self.min_delta = abs(min_delta)
        name = monitor.removeprefix("val_")
        if mode == "min" or (mode == "auto" and (name == "loss" or name.endswith("_loss"))):
            self.monitor_op = np.less
        elif mode == "max" or (mode == "auto" and (name in MAXIMIZED or name.endswith("accuracy"))):
            self.monitor_op = np.greater
        else:
            raise UserError(f"{type(self).__name__} cannot tell whether '{monitor}' should be minimized or "
                            "maximized; pass mode='min' or mode='max'")
        if self.monitor_op is np.less:
            self.min_delta *= -1
        self._warned = False

    def _is_improvement(self, value, reference) -> bool:
        if reference is None:
            return True
        return bool(self.monitor_op(np.float32(value - self.min_delta), np.float32(reference)))

    def _value(self, logs) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None and not self._warned:
            self._warned = True
            warnings.warn(f"{type(self).__name__} is conditioned on metric '{self.monitor}' which is not "
                          f"available. Available metrics are: {','.join(logs or {})}", stacklevel=3)
        return value

    def _say(self, message: str) -> None:
        if getattr(self, "verbose", 0) > 0 and is_primary():
            print(message, flush=True)


class EarlyStopping(MonitorCallback):
    """Keras' EarlyStopping: stops when `monitor` has not improved (by more than
    `min_delta`) for `patience` epochs, counting from `start_from_epoch`; with a `baseline`,
    the wait restarts only on values better than it. With `restore_best_weights`, the
    weights of the best epoch are restored when training ends (they are checkpointed too,
    so a resumed run restores the same ones)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best, self.best_weights = None, None

    def _weights(self):
        # A copy: the train step donates the state's buffers.
        return jax.tree.map(jnp.copy, self.trainer.state.weights())

    def on_epoch_end(self, epoch, logs=None):
        current = self._value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self._weights(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self._weights()
            # The wait restarts only when the value beats the baseline too.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0:
            self._say(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            self._say(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.trainer.state = self.trainer.state.replace(**self.best_weights)

    def state_dict(self) -> dict:
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best,
                "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    def array_state(self):
        return self.best_weights

    def array_template(self):
        return self.trainer.state.weights() if self.restore_best_weights else None

    def load_array_state(self, arrays) -> None:
        self.best_weights = arrays


class ReduceLROnPlateau(MonitorCallback):
    """Keras' ReduceLROnPlateau: after `patience` epochs without an improvement of `monitor`
    by more than `min_delta`, multiplies the learning rate by `factor` (not below `min_lr`),
    then waits `cooldown` epochs. The learning rate is the schedule's times a scale held
    in the optimizer state, so the reduction rides on top of any schedule and checkpoints
    carry it. A new phase (config.phases) starts at its own rate (a fresh optimizer state,
    the scale at 1); this callback's best value, patience and cooldown counters carry on."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise UserError(f"ReduceLROnPlateau does not support a factor >= 1.0, got {factor}")
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.verbose, self.cooldown = verbose, cooldown
        self.cooldown_counter = self.wait = 0

    def on_train_begin(self, logs=None):
        self.best, self.cooldown_counter, self.wait = None, 0, 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self.trainer.learning_rate
        current = self._value(logs)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = self.trainer.learning_rate
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    self.trainer.set_learning_rate(new_lr)
                    self._say(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait, self.cooldown_counter = state["best"], state["wait"], state["cooldown_counter"]


class LearningRateScheduler(Callback):
    """Keras' LearningRateScheduler: at each epoch's start, the learning rate becomes
    `schedule(epoch, lr)` (or `schedule(epoch)`). Use it with the constant schedule (the
    config's `schedule`, in every phase), as Keras refuses to set the rate of a scheduled
    optimizer. At a phase's first epoch `lr` is the phase's own `learning_rate`."""

    def __init__(self, schedule: Callable, verbose: int = 0):
        self.schedule, self.verbose = schedule, verbose
        self._applied_epoch = None

    def on_train_begin(self, logs=None):
        phases = getattr(self.trainer, "phases", None)
        for config in [p.config for p in phases] if phases else [self.trainer.config]:
            if config.schedule != "constant":
                raise UserError(f"LearningRateScheduler sets the learning rate itself; it cannot be combined with "
                                f"schedule '{config.schedule}': use --config.schedule=constant (in every phase)")

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self._applied_epoch:  # resumed inside this epoch: its rate is already set
            return
        lr = self.trainer.learning_rate
        try:
            lr = self.schedule(epoch, lr)
        except TypeError:  # Keras' older one-argument form
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, np.float32, np.float64)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {lr}")
        self.trainer.set_learning_rate(float(lr))
        self._applied_epoch = epoch
        if self.verbose > 0 and is_primary():
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.", flush=True)

    def state_dict(self) -> dict:
        return {"applied_epoch": self._applied_epoch}

    def load_state_dict(self, state: dict) -> None:
        self._applied_epoch = state["applied_epoch"]


class ModelCheckpoint(MonitorCallback):
    """Keras' ModelCheckpoint on an Orbax CheckpointManager in `directory` (default
    `workdir/best_checkpoints`): saves the train state at each epoch end, or every
    `save_freq` steps, and with `save_best_only` only when `monitor` improved (Keras'
    decision, including that a missing monitor saves). Orbax keeps the `max_to_keep` best
    by `monitor` (its metric for the step). The run's latest checkpoints, for resuming, are
    kept apart in `workdir/checkpoints`, so best-k retention never evicts them.

    `jaxcnn.train.checkpoint.restore(workdir, trainer.state_template, which='best')` reads the best one.
    """

    def __init__(self, directory: str | None = None, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, mode: str = "auto", save_freq: int | str = "epoch",
                 initial_value_threshold: float | None = None, max_to_keep: int = 1):
        super().__init__(monitor, mode, initial_value_threshold)
        if save_freq != "epoch" and not isinstance(save_freq, int):
            raise UserError(f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or integer values")
        self.directory, self.verbose, self.save_best_only = directory, verbose, save_best_only
        self.save_freq, self.max_to_keep = save_freq, max_to_keep
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0
        self._checkpointer = None
        self.saved: list[int] = []  # steps saved by this fit() call

    def on_train_begin(self, logs=None):
        from jaxcnn.train import checkpoint
        directory = self.directory
        if directory is None:
            if self.trainer.workdir is None:
                raise UserError("ModelCheckpoint needs a directory, or a workdir for the run: "
                                "pass ModelCheckpoint(directory=...) or fit(workdir=...)")
            directory = os.path.join(self.trainer.workdir, checkpoint.BEST_DIR)
        mode = "min" if self.monitor_op is np.less else "max"
        self._checkpointer = checkpoint.best_checkpointer(directory, self.monitor, mode, self.max_to_keep)
        # Steps beyond the resumed one were saved by a run that was killed: it is redone.
        self._checkpointer.delete_after(int(self.trainer.state.step))

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        if self._should_save_on_batch(step):
            self._save_model(self._current_epoch, step, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _should_save_on_batch(self, batch: int) -> bool:
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            add_batches = batch + 1
        else:
            add_batches = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add_batches
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save_model(self, epoch: int, logs) -> bool:
        if not self.save_best_only:
            return True
        current = (logs or {}).get(self.monitor)
        if current is None:  # Keras saves anyway, with a warning
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=3)
            return True
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            self._say(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, "
                      f"saving model to {self._checkpointer.directory}")
            self.best = current
            return True
        self._say(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _save_model(self, epoch: int, batch: int | None, logs) -> None:
        if not self._should_save_model(epoch, logs):
            return
        state = self.trainer.state
        step = int(state.step)
        value = (logs or {}).get(self.monitor)
        meta = {"epoch": epoch + 1 if batch is None else epoch, "step": step, "monitor": self.monitor,
                "value": value, "logs": {k: float(v) for k, v in (logs or {}).items()},
                # The phase whose optimizer state the step holds (checkpoint.phase reads it back).
                "phase": getattr(getattr(self.trainer, "phase", None), "index", 0)}
        if step in self._checkpointer.all_steps():
            return  # saved already (a resumed run redoing the step it was killed at)
        # A step without the monitored value (Keras saves it anyway) ranks worst, not unranked: Orbax
        # then keeps the newest of such steps, as a function of the steps saved alone, so a resumed
        # run keeps the same ones (unranked steps are evicted depending on what the manager has seen).
        worst = float("inf") if self.monitor_op is np.less else float("-inf")
        self._checkpointer.save(step, {"state": state}, meta,
                                metrics={self.monitor: worst if value is None else float(value)})
        self.saved.append(step)

    def on_train_end(self, logs=None):
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def state_dict(self) -> dict:
        return {"best": self.best, "batches_seen_since_last_saving": self._batches_seen_since_last_saving,
                "last_batch_seen": self._last_batch_seen, "current_epoch": self._current_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self._batches_seen_since_last_saving = state["batches_seen_since_last_saving"]
        self._last_batch_seen, self._current_epoch = state["last_batch_seen"], state["current_epoch"]


# --- from the config --------------------------------------------------------------------

def from_config(config, workdir: str | None) -> list[Callback]:
    """The callbacks `config.callbacks` enables (the loggers are the loop's own)."""
    cb = config.callbacks
    out: list[Callback] = []
    if cb.terminate_on_nan:
        out.append(TerminateOnNaN())
    if cb.reduce_lr_on_plateau.enabled:
        r = cb.reduce_lr_on_plateau
        out.append(ReduceLROnPlateau(monitor=r.monitor, factor=r.factor, patience=r.patience, mode=r.mode,
                                     min_delta=r.min_delta, cooldown=r.cooldown, min_lr=r.min_lr,
                                     verbose=1 if config.verbose else 0))
    if cb.early_stopping.enabled:
        e = cb.early_stopping
        out.append(EarlyStopping(monitor=e.monitor, min_delta=e.min_delta, patience=e.patience, mode=e.mode,
                                 baseline=e.baseline, restore_best_weights=e.restore_best_weights,
                                 start_from_epoch=e.start_from_epoch, verbose=1 if config.verbose else 0))
    if cb.model_checkpoint.enabled:
        m = cb.model_checkpoint
        if workdir is None:
            raise UserError("callbacks.model_checkpoint needs a workdir; pass --workdir (or fit(workdir=...))")
        out.append(ModelCheckpoint(monitor=m.monitor, save_best_only=m.save_best_only, mode=m.mode,
                                   save_freq=m.save_freq if m.save_freq == "epoch" else int(m.save_freq),
                                   initial_value_threshold=m.initial_value_threshold, max_to_keep=m.max_to_keep))
    return out


def loggers(config, workdir: str | None, verbose: int) -> list[Callback]:
    """History, the workdir's files (metrics.jsonl, TensorBoard, CSV) and the progress bar,
    which come after every other callback (Keras appends History and ProgbarLogger last),
    so they record the logs as the other callbacks left them."""
    out: list[Callback] = [History()]
    if workdir is not None:
        out.append(MetricsLogger(os.path.join(workdir, "metrics.jsonl")))
        tb = config.callbacks.tensorboard
        if tb.enabled:
            out.append(TensorBoard(os.path.join(workdir, "tensorboard"), histogram_freq=tb.histogram_freq,
                                   write_images=tb.write_images,
                                   update_freq=tb.update_freq if tb.update_freq == "epoch" else int(tb.update_freq)))
        csv_cfg = config.callbacks.csv_logger
        if csv_cfg.enabled:
            out.append(CSVLogger(os.path.join(workdir, csv_cfg.filename), separator=csv_cfg.separator))
    out.append(ProgbarLogger(verbose if is_primary() else 0, config.log_every_steps))
    return out

