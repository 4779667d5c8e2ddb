"""The fit loop: learning, determinism, resume, data parallelism, heads, callbacks."""

import json

import numpy as np
import pytest
import jax

from jaxcnn import config as config_lib
from jaxcnn.data import Dataset, Split, sources
from jaxcnn.train import Callback, Trainer, fit


def make_config(**overrides):
    c = config_lib.get_config()
    c.verbose = 0
    for k, v in overrides.items():
        c[k] = v
    return c


def test_loss_decreases_and_the_model_learns_real_digits():
    trainer = Trainer(make_config(epochs=4))
    history = trainer.fit()
    loss = history.history["loss"]
    assert all(b < a for a, b in zip(loss, loss[1:])), loss
    assert history.history["val_accuracy"][-1] > 0.9
    assert trainer.evaluate(trainer.test_data)["accuracy"] > 0.9
    assert history.epoch == [0, 1, 2, 3]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"}


def test_same_seed_same_run_different_seed_different_run():
    runs = [Trainer(make_config(epochs=1, seed=s)) for s in (0, 0, 1)]
    losses = [t.fit().history["loss"][0] for t in runs]
    assert losses[0] == losses[1] != losses[2]


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    fit(make_config(epochs=2), str(tmp_path / "resumed"))
    resumed = fit(make_config(epochs=3), str(tmp_path / "resumed"))
    straight = fit(make_config(epochs=3), str(tmp_path / "straight"))
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.epoch == [0, 1, 2]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    final = [json.loads((tmp_path / d / "eval" / "test.json").read_text()) for d in ("resumed", "straight")]
    for results in final:
        assert results.pop("wall_seconds") > 0  # timing is the one thing allowed to differ
    assert final[0] == final[1]


def two_class_digits():
    """Digits 0 vs 1: a binary task for the sigmoid head."""
    d = sources.load_digits()
    keep = lambda s: Split(s.images[s.labels < 2], s.labels[s.labels < 2])
    return Dataset("digits01", keep(d.train), keep(d.test), keep(d.test), ["zero", "one"], d.pixel_max)


def test_binary_head_trains_one_sigmoid_unit():
    trainer = Trainer(make_config(epochs=3), dataset=two_class_digits())
    assert trainer.head.kind == "sigmoid"
    assert trainer.state.params["head"]["kernel"].shape[-1] == 1
    trainer.fit()
    assert trainer.evaluate(trainer.test_data)["accuracy"] > 0.97


def test_custom_callbacks_see_keras_hooks_and_can_stop_training():
    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_train_begin(self, logs=None):
            self.events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append(f"epoch_begin {epoch}")

        def on_train_batch_end(self, step, logs=None):
            if step == 0:
                self.first_batch_loss = logs["loss"]  # read on demand from the device

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(f"epoch_end {epoch} {sorted(logs)}")
            if epoch == 1:
                self.trainer.stop_training = True

        def on_train_end(self, logs=None):
            self.events.append("train_end")

    recorder = Recorder()
    history = Trainer(make_config(epochs=5)).fit(callbacks=[recorder])
    keys = "['accuracy', 'learning_rate', 'loss', 'seconds', 'val_accuracy', 'val_loss']"
    assert recorder.events == ["train_begin", "epoch_begin 0", f"epoch_end 0 {keys}", "epoch_begin 1",
                               f"epoch_end 1 {keys}", "train_end"]
    assert np.isfinite(recorder.first_batch_loss)
    assert len(history.history["loss"]) == 2


def test_a_nan_loss_stops_with_a_clear_error(tmp_path):
    from jaxcnn.errors import UserError
    d = sources.load_digits()
    broken = Split(np.full_like(d.train.images, 0), d.train.labels)
    dataset = Dataset("digits", broken, None, d.test, d.class_names, pixel_max=0.0)  # 0/0 -> NaN pixels
    with pytest.raises(UserError, match="loss became nan in epoch 1"):
        Trainer(make_config(epochs=2), dataset=dataset).fit()
