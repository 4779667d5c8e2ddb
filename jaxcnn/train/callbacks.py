"""Keras-style callbacks for the fit loop.

A callback sees the trainer (`self.trainer`: state, config, workdir, and the
`stop_training` flag) and the loop's `params` (epochs, steps, batch_size, verbose).
Hooks receive Keras' arguments: a 0-based `epoch` index and a `logs` dict with
`loss`, `accuracy`, `val_loss`, `val_accuracy`, `learning_rate`.

Batch hooks get `LazyLogs`: reading a value copies the running means from the
device, so a callback that never reads costs no device-to-host transfer.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping

# Keras' log names -> the workdir's metrics.jsonl names (../shared/DESIGN.md).
JSONL_NAMES = {"learning_rate": "lr", "loss": "train_loss", "accuracy": "train_accuracy",
               "val_loss": "val_loss", "val_accuracy": "val_accuracy", "seconds": "seconds"}


class Callback:
    """Base class: override any hook."""

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
            self._bar = tqdm(total=self.params["steps"] * self.params["batch_size"], unit="img", unit_scale=True,
                             desc=f"Epoch {epoch + 1}/{self.params['epochs']}", leave=False, file=sys.stderr,
                             dynamic_ncols=True)

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


class MetricsLogger(Callback):
    """Writes `metrics.jsonl`: one JSON object per epoch (epoch, step, lr, train_loss,
    train_accuracy, val_loss, val_accuracy, seconds). `epoch` counts completed epochs."""

    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, logs=None):
        # Rewrite from the restored history, so a resumed file never holds epochs that
        # the checkpoint does not (e.g. after a kill between the two writes).
        history, steps = self.trainer.history, self.trainer.steps_per_epoch
        lines = [self._line(i, {k: v[i] for k, v in history.items()}, steps)
                 for i in range(self.trainer.initial_epoch)]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.replace(tmp, self.path)

    @staticmethod
    def _line(epoch: int, logs: Mapping, steps_per_epoch: int) -> str:
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch}
        record.update({JSONL_NAMES.get(k, k): v for k, v in logs.items()})
        return json.dumps(record) + "\n"

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(self._line(epoch, logs or {}, self.trainer.steps_per_epoch))


class TensorBoard(Callback):
    """Per-epoch scalars in `log_dir/train` and `log_dir/validation` (as Keras lays them out,
    so train and validation curves overlay), with the learning rate in train."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writers = None

    def on_train_begin(self, logs=None):
        from clu import metric_writers
        self._writers = {name: metric_writers.SummaryWriter(os.path.join(self.log_dir, name))
                         for name in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train = {k: logs[k] for k in ("loss", "accuracy", "learning_rate") if k in logs}
        val = {k[4:]: logs[k] for k in ("val_loss", "val_accuracy") if k in logs}
        self._writers["train"].write_scalars(epoch + 1, train)
        if val:
            self._writers["validation"].write_scalars(epoch + 1, val)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in (self._writers or {}).values():
            w.close()
