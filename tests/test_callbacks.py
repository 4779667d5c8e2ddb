"""Callback decisions against Keras' own callbacks fed the same metric sequences.

Keras (KERAS_BACKEND=jax, conftest) is the oracle: for each sequence and each set of
arguments, which epoch stops, which epoch reduces the learning rate (and to what), which
weights are restored and what is saved must be Keras' decision.
"""

import csv
import os
import random

import jax.numpy as jnp
import keras
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxcnn import callbacks
from jaxcnn.errors import UserError
from jaxcnn.train import checkpoint
from jaxcnn.train.state import TrainState

LR0 = 0.01


class FakeTrainer:
    """What callbacks read and change of a Trainer: the state (its params identify the
    epoch they were set at), the stop flag, and a float32 learning rate like Keras'."""

    def __init__(self, workdir=None):
        self.state = TrainState.create(apply_fn=None, params={"w": jnp.zeros(())}, tx=optax.sgd(0.1))
        self.stop_training = False
        self.workdir = workdir
        self._lr = np.float32(LR0)

    @property
    def learning_rate(self) -> float:
        return float(self._lr)

    def set_learning_rate(self, lr: float) -> None:
        self._lr = np.float32(lr)


def keras_model():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(LR0), loss="mse", metrics=["accuracy"])
    model.evaluate(np.zeros((2, 1)), np.zeros((2, 1)), verbose=0)  # builds the metrics 'auto' mode reads
    return model


MODEL = None


def drive_keras(cb, sequence):
    """Runs `cb` over the per-epoch logs; returns (epochs run, lr after each epoch, final weight id)."""
    global MODEL
    MODEL = MODEL or keras_model()
    MODEL.optimizer.learning_rate = LR0
    MODEL.stop_training = False
    cb.set_model(MODEL)
    cb.on_train_begin()
    lrs, epochs = [], 0
    for epoch, logs in enumerate(sequence):
        MODEL.layers[0].kernel.assign(np.full((1, 1), epoch, np.float32))
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, dict(logs))
        lrs.append(float(np.asarray(MODEL.optimizer.learning_rate)))
        epochs += 1
        if MODEL.stop_training:
            break
    cb.on_train_end()
    return epochs, lrs, int(np.asarray(MODEL.layers[0].kernel)[0, 0])


def drive_ours(cb, sequence, trainer=None):
    trainer = trainer or FakeTrainer()
    cb.set_trainer(trainer)
    cb.set_params({})
    cb.on_train_begin()
    lrs, epochs = [], 0
    for epoch, logs in enumerate(sequence):
        trainer.state = trainer.state.replace(params={"w": jnp.float32(epoch)})
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, dict(logs))
        lrs.append(trainer.learning_rate)
        epochs += 1
        if trainer.stop_training:
            break
    cb.on_train_end()
    return epochs, lrs, int(trainer.state.params["w"])


def sequences(count, seed=0, epochs=14):
    """Metric sequences with what decides callbacks: plateaus, exact repeats, steps just
    above and below min_delta, and differences below float32 resolution."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        loss, acc, rows = rng.uniform(0.5, 2.0), rng.uniform(0.1, 0.6), []
        for _ in range(epochs):
            move = rng.random()
            if move < 0.3:
                pass  # exact plateau
            elif move < 0.4:
                loss += rng.choice([1e-9, -1e-9, 1e-3, -1e-3, 0.0999, -0.0101])  # below f32 resolution / near deltas
            else:
                loss += rng.gauss(-0.03, 0.06)
                acc = min(1.0, max(0.0, acc + rng.gauss(0.02, 0.03)))
            rows.append({"loss": loss * 1.1, "accuracy": acc * 0.95, "val_loss": loss, "val_accuracy": acc})
        out.append(rows)
    return out


EARLY_STOPPING_ARGS = [
    dict(),
    dict(patience=2),
    dict(patience=3, min_delta=0.01),
    dict(patience=1, restore_best_weights=True),
    dict(patience=2, baseline=0.9, restore_best_weights=True),
    dict(monitor="val_accuracy", patience=2),
    dict(monitor="val_accuracy", patience=1, mode="max", min_delta=0.005, baseline=0.3),
    dict(monitor="loss", mode="min", patience=2, start_from_epoch=3, restore_best_weights=True),
    dict(monitor="val_loss", mode="max", patience=1),  # a perverse mode is still Keras' decision
]


@pytest.mark.parametrize("kwargs", EARLY_STOPPING_ARGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_early_stopping_stops_and_restores_as_keras(kwargs):
    stopped_early = 0
    for sequence in sequences(40, seed=len(str(kwargs))):
        expected = drive_keras(keras.callbacks.EarlyStopping(**kwargs), sequence)
        got = drive_ours(callbacks.EarlyStopping(**kwargs), sequence)
        assert got == expected, (kwargs, sequence)
        stopped_early += expected[0] < len(sequence)
    assert stopped_early > 0  # the sequences exercise the stopping rule


REDUCE_LR_ARGS = [
    dict(),
    dict(patience=0),
    dict(patience=1, factor=0.5),
    dict(patience=2, factor=0.5, cooldown=2),
    dict(patience=1, factor=0.1, min_lr=2e-4),
    dict(patience=1, factor=0.5, min_delta=0.0),
    dict(patience=0, factor=0.5, cooldown=1, min_delta=0.01),
    dict(monitor="val_accuracy", patience=1, factor=0.3),
    dict(monitor="loss", mode="min", patience=2, factor=0.2, cooldown=1, min_lr=1e-4),
]


@pytest.mark.parametrize("kwargs", REDUCE_LR_ARGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_reduce_lr_on_plateau_reduces_as_keras(kwargs):
    reductions = 0
    for sequence in sequences(40, seed=len(str(kwargs)) + 1):
        expected = drive_keras(keras.callbacks.ReduceLROnPlateau(**kwargs), sequence)
        got = drive_ours(callbacks.ReduceLROnPlateau(**kwargs), sequence)
        assert got == expected, (kwargs, sequence)
        reductions += len(set(expected[1])) - 1
    assert reductions > 0


def test_a_metric_without_a_known_direction_needs_a_mode():
    with pytest.raises(UserError, match="pass mode='min' or mode='max'"):
        callbacks.EarlyStopping(monitor="val_top_speed")
    assert callbacks.EarlyStopping(monitor="val_top_speed", mode="max").monitor_op is np.greater


def test_callback_state_round_trips_through_json_midway():
    """Stopping a sequence midway and resuming from state_dict() decides as an unbroken run."""
    import json
    for sequence in sequences(20, seed=7):
        for make in (lambda: callbacks.EarlyStopping(patience=2, min_delta=0.01),
                     lambda: callbacks.ReduceLROnPlateau(patience=1, factor=0.5, cooldown=1)):
            whole = drive_ours(make(), sequence)
            trainer, first = FakeTrainer(), make()
            drive_ours(first, sequence[:5], trainer)
            if trainer.stop_training:
                continue
            second = make()
            second.set_trainer(trainer)
            second.on_train_begin()
            second.load_state_dict(json.loads(json.dumps(first.state_dict())))
            epochs, lrs = 5, []
            for epoch in range(5, len(sequence)):
                second.on_epoch_end(epoch, dict(sequence[epoch]))
                lrs.append(trainer.learning_rate)
                epochs += 1
                if trainer.stop_training:
                    break
            assert epochs == whole[0] and lrs == whole[1][5:]


# --- ModelCheckpoint ----------------------------------------------------------------------

STEPS_PER_EPOCH = 5


def drive_checkpoints_keras(tmp_path, kwargs, sequence, batch_losses):
    pattern = "e{epoch:03d}b{batch:03d}.weights.h5" if kwargs.get("save_freq", "epoch") != "epoch" else "e{epoch:03d}.weights.h5"
    cb = keras.callbacks.ModelCheckpoint(str(tmp_path / pattern), save_weights_only=True, **kwargs)
    global MODEL
    MODEL = MODEL or keras_model()
    cb.set_model(MODEL)
    cb.on_train_begin()
    for epoch, logs in enumerate(sequence):
        cb.on_epoch_begin(epoch)
        for batch in range(STEPS_PER_EPOCH):
            cb.on_train_batch_begin(batch)
            cb.on_train_batch_end(batch, {"loss": batch_losses[epoch * STEPS_PER_EPOCH + batch]})
        cb.on_epoch_end(epoch, dict(logs))
    cb.on_train_end()
    saved = set()
    for name in os.listdir(tmp_path):  # e{epoch+1}[b{batch+1}].weights.h5 -> our global step
        epoch = int(name[1:4])
        saved.add(epoch * STEPS_PER_EPOCH if "b" not in name else (epoch - 1) * STEPS_PER_EPOCH + int(name[5:8]))
    return saved


def drive_checkpoints_ours(directory, kwargs, sequence, batch_losses, max_to_keep):
    trainer = FakeTrainer()
    cb = callbacks.ModelCheckpoint(directory=str(directory), max_to_keep=max_to_keep, **kwargs)
    cb.set_trainer(trainer)
    cb.on_train_begin()
    step = 0
    for epoch, logs in enumerate(sequence):
        cb.on_epoch_begin(epoch)
        for _ in range(STEPS_PER_EPOCH):
            cb.on_train_batch_begin(step)
            trainer.state = trainer.state.replace(step=step + 1, params={"w": jnp.float32(step + 1)})
            cb.on_train_batch_end(step, callbacks.LazyLogs(lambda s=step: {"loss": batch_losses[s]}))
            step += 1
        cb.on_epoch_end(epoch, dict(logs))
    cb.on_train_end()
    return cb


CHECKPOINT_ARGS = [
    dict(save_best_only=True),
    dict(save_best_only=False),
    dict(monitor="val_accuracy", save_best_only=True),
    dict(monitor="val_accuracy", mode="min", save_best_only=True, initial_value_threshold=0.4),
    dict(monitor="loss", save_best_only=True, save_freq=7),  # steps: the batch logs' running loss
    dict(monitor="val_loss", save_best_only=True, save_freq=4),  # missing in batch logs: Keras saves anyway
]


@pytest.mark.parametrize("kwargs", CHECKPOINT_ARGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_model_checkpoint_saves_what_keras_saves_and_orbax_keeps_the_best(tmp_path, kwargs):
    sequence = sequences(1, seed=3, epochs=8)[0]
    rng = random.Random(5)
    batch_losses = [rng.uniform(0.2, 1.0) for _ in range(len(sequence) * STEPS_PER_EPOCH)]
    (tmp_path / "keras").mkdir()
    expected = drive_checkpoints_keras(tmp_path / "keras", kwargs, sequence, batch_losses)
    with pytest.warns(UserWarning) if kwargs.get("save_freq") == 4 else _no_warning():
        ours = drive_checkpoints_ours(tmp_path / "best", kwargs, sequence, batch_losses, max_to_keep=2)
    assert set(ours.saved) == expected and expected

    # Orbax's own reader: the steps kept are the 2 best saved by the monitored value.
    mode = "min" if ours.monitor_op is np.less else "max"
    value = {}
    for step in ours.saved:
        epoch, batch = divmod(step - 1, STEPS_PER_EPOCH)
        logs = sequence[epoch] if step % STEPS_PER_EPOCH == 0 and kwargs.get("save_freq", "epoch") == "epoch" \
            else {"loss": batch_losses[step - 1]}
        value[step] = logs.get(ours.monitor)
    # Best first; among equal values the newest first (Orbax keeps the newest of a tie).
    newest_first = sorted((s for s in value if value[s] is not None), reverse=True)
    scored = sorted(newest_first, key=lambda s: value[s], reverse=mode == "max")
    manager = ocp.CheckpointManager(str(tmp_path / "best"), options=ocp.CheckpointManagerOptions(
        best_fn=lambda m: m[ours.monitor], best_mode=mode))
    kept = sorted(manager.all_steps())
    if scored:
        assert kept == sorted(scored[:2])
        assert manager.best_step() == scored[0]
        assert manager.metrics(scored[0])[ours.monitor] == pytest.approx(value[scored[0]], rel=0, abs=0)
        state, meta = checkpoint.Checkpointer(str(tmp_path / "best"), max_to_keep=None, best_fn=lambda m: m[ours.monitor],
                                              best_mode=mode).restore(FakeTrainer().state)
        assert int(state.step) == scored[0] and float(state.params["w"]) == scored[0] and meta["step"] == scored[0]
    else:  # no monitored value at all: each step ranks worst, and of equals Orbax keeps the newest
        assert kept == sorted(ours.saved)[-2:]


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- loggers --------------------------------------------------------------------------------

def test_csv_logger_writes_the_file_keras_writes(tmp_path):
    rows = [{**logs, "learning_rate": 0.001 * (i + 1)} for i, logs in enumerate(sequences(1, seed=9, epochs=4)[0])]
    for name, cb in (("keras.csv", keras.callbacks.CSVLogger(str(tmp_path / "keras.csv"), separator=";")),
                     ("ours.csv", callbacks.CSVLogger(str(tmp_path / "ours.csv"), separator=";"))):
        if isinstance(cb, callbacks.Callback):
            cb.set_trainer(type("T", (), {"history": {}, "initial_epoch": 0})())
        cb.on_train_begin()
        for epoch, logs in enumerate(rows):
            cb.on_epoch_end(epoch, dict(logs))
        cb.on_train_end()
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "keras.csv").read_bytes()
    with open(tmp_path / "ours.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f, delimiter=";")] == ["0", "1", "2", "3"]


def test_terminate_on_nan_stops_at_the_batch_keras_stops_at():
    losses = [1.0, 0.9, float("inf"), 0.5, float("nan")]
    keras_cb = keras.callbacks.TerminateOnNaN()
    global MODEL
    MODEL = MODEL or keras_model()
    MODEL.stop_training = False
    keras_cb.set_model(MODEL)
    ours, trainer = callbacks.TerminateOnNaN(), FakeTrainer()
    ours.set_trainer(trainer)
    for batch, loss in enumerate(losses):
        keras_cb.on_train_batch_end(batch, {"loss": loss})
        ours.on_train_batch_end(batch, callbacks.LazyLogs(lambda loss=loss: {"loss": loss}))
        assert trainer.stop_training == MODEL.stop_training
        if MODEL.stop_training:
            break
    assert batch == 2
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        callbacks.TerminateOnNaN(raise_error=True).on_train_batch_end(0, {"loss": float("nan")})


def test_progbar_logger_reads_the_metrics_every_log_interval_and_prints_keras_epoch_lines(capsys):
    """verbose=1: a bar on stderr that reads the lazy batch logs only every `log_every_steps`
    steps (so no device-to-host copy per step), then Keras' one line per epoch on the stream;
    verbose=2: the line only; verbose=0: nothing."""
    import io
    import types
    from jaxcnn.train.callbacks import LazyLogs, ProgbarLogger
    for verbose in (0, 1, 2):
        stream, reads = io.StringIO(), []
        bar = ProgbarLogger(verbose=verbose, log_every_steps=3, stream=stream)
        bar.set_trainer(types.SimpleNamespace(epoch_start_batch=0))
        bar.set_params({"epochs": 2, "steps": 7, "batch_size": 4, "verbose": verbose})
        bar.on_epoch_begin(1)
        for step in range(7, 14):
            bar.on_train_batch_end(step, LazyLogs(lambda step=step: reads.append(step) or {"loss": 0.5, "accuracy": 0.25}))
        bar.on_epoch_end(1, {"loss": 0.5, "accuracy": 0.25, "val_loss": 0.75, "val_accuracy": 0.125,
                             "learning_rate": 1e-3, "seconds": 1.25})
        err = capsys.readouterr().err
        assert reads == ([8, 11] if verbose == 1 else [])
        assert ("Epoch 2/2" in err and "img/s" in err) == (verbose == 1), err  # a tqdm bar of images
        assert stream.getvalue() == ("" if verbose == 0 else "Epoch 2/2 - 1.2s - loss: 0.5000 - accuracy: 0.2500 - "
                                     "val_loss: 0.7500 - val_accuracy: 0.1250 - lr: 0.001\n")
