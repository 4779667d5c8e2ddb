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
        assert results.pop("cpu_seconds") > 0
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


# --- regularization, mixed precision and callbacks in real runs --------------------------------

def test_the_reported_loss_is_keras_loss_label_smoothing_and_l2_included():
    import keras
    config = make_config(epochs=1)
    config.regularization.update(l2=1e-3, label_smoothing=0.2)
    trainer = Trainer(config)
    trainer.fit()
    test = trainer.dataset.test
    logits = trainer.model.apply({"params": trainer.state.params}, test.images.astype(np.float32) / 16.0)
    expected = float(keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)(
        np.eye(10)[test.labels], np.asarray(logits)))
    expected += sum(float(keras.regularizers.L2(1e-3)(np.asarray(layer["kernel"])))
                    for layer in trainer.state.params.values())
    assert trainer.evaluate(trainer.test_data)["loss"] == pytest.approx(expected, rel=1e-5)


def test_bfloat16_mixed_precision_computes_in_bf16_and_keeps_params_and_optimizer_in_f32():
    trainer = Trainer(make_config(epochs=3, dtype="bfloat16"))
    history = trainer.fit()
    floats = [x for x in jax.tree.leaves((trainer.state.params, trainer.state.opt_state))
              if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
    assert floats and all(x.dtype == jax.numpy.float32 for x in floats)
    _, inter = trainer.model.apply({"params": trainer.state.params}, np.zeros((2, 8, 8, 1), np.float32),
                                   mutable=["intermediates"])
    assert inter["intermediates"]["conv1_act"][0].dtype == jax.numpy.bfloat16
    assert history.history["val_accuracy"][-1] > 0.85


def test_the_ema_of_the_weights_is_what_evaluation_scores():
    config = make_config(epochs=2)
    config.optimization.ema_momentum = 0.9
    trainer = Trainer(config)
    trainer.fit()
    state = trainer.state
    ema = trainer.evaluate(trainer.val_data, state.replace(params=state.ema_params, ema_params=None))
    raw = trainer.evaluate(trainer.val_data, state.replace(ema_params=None))
    assert trainer.evaluate(trainer.val_data) == ema != raw


def test_frozen_layers_keep_their_initial_weights():
    config = make_config(epochs=1)
    config.optimization.freeze = ("conv1",)
    trainer = Trainer(config)
    before = jax.device_get(trainer.state.params)
    trainer.fit()
    after = jax.device_get(trainer.state.params)
    np.testing.assert_array_equal(after["conv1"]["kernel"], before["conv1"]["kernel"])
    assert not np.array_equal(after["dense"]["kernel"], before["dense"]["kernel"])


def keras_learning_rates(callback, sequence, lr0):
    """Keras' learning rate during each epoch, for a callback fed `sequence` of logs."""
    import keras
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(lr0), loss="mse")
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch, logs in enumerate(sequence):
        callback.on_epoch_begin(epoch)
        rates.append(float(np.asarray(model.optimizer.learning_rate)))
        callback.on_epoch_end(epoch, dict(logs))
    return rates


def test_reduce_lr_on_plateau_in_a_run_reduces_the_optimizer_rate_as_keras():
    import keras
    config = make_config(epochs=5)
    config.callbacks.reduce_lr_on_plateau.update(enabled=True, patience=0, factor=0.5, min_delta=0.3)
    history = Trainer(config).fit().history
    sequence = [{"val_loss": v} for v in history["val_loss"]]
    expected = keras_learning_rates(keras.callbacks.ReduceLROnPlateau(patience=0, factor=0.5, min_delta=0.3),
                                    sequence, 1e-3)
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-6)
    assert expected[-1] < expected[0]


def test_learning_rate_scheduler_sets_the_rate_each_epoch_as_keras():
    import keras
    from jaxcnn import callbacks
    from jaxcnn.errors import UserError
    schedule = lambda epoch, lr: lr if epoch < 2 else lr * 0.5
    history = Trainer(make_config(epochs=4)).fit(callbacks=[callbacks.LearningRateScheduler(schedule)]).history
    expected = keras_learning_rates(keras.callbacks.LearningRateScheduler(schedule), [{}] * 4, 1e-3)
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-6)
    with pytest.raises(UserError, match="cannot be combined with schedule 'cosine'"):
        Trainer(make_config(epochs=1, schedule="cosine")).fit(callbacks=[callbacks.LearningRateScheduler(schedule)])


def test_learning_rate_scheduler_in_phases_sees_each_phase_start_at_its_own_rate_as_keras():
    """Keras' equivalent of phases: compile with a new optimizer, then fit(initial_epoch=...) with
    the same callback."""
    import keras
    from jaxcnn import callbacks
    from jaxcnn.errors import UserError
    schedule = lambda epoch, lr: lr * 0.5
    config = make_config(epochs=3, phases=({"epochs": 1}, {"epochs": 2, "learning_rate": 1e-2, "optimizer": "sgd"}))
    history = Trainer(config).fit(callbacks=[callbacks.LearningRateScheduler(schedule)]).history
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback, expected = keras.callbacks.LearningRateScheduler(schedule), []
    for lr, epochs in ((1e-3, [0]), (1e-2, [1, 2])):
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        callback.set_model(model)
        for epoch in epochs:
            callback.on_epoch_begin(epoch)
            expected.append(float(np.asarray(model.optimizer.learning_rate)))
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-6)
    assert history["phase"] == [1, 2, 2]
    with pytest.raises(UserError, match="cannot be combined with schedule 'cosine'.*in every phase"):
        config.phases = ({"epochs": 1}, {"epochs": 2, "schedule": "cosine"})
        Trainer(config).fit(callbacks=[callbacks.LearningRateScheduler(schedule)])


def test_terminate_on_nan_stops_at_the_first_nan_batch_without_an_error():
    import keras
    config = make_config(epochs=3, optimizer="sgd", learning_rate=1e30)
    config.callbacks.terminate_on_nan = True

    class Losses(Callback):
        losses = []

        def on_train_batch_end(self, step, logs=None):
            self.losses.append(logs["loss"])

    trainer = Trainer(config)
    history = trainer.fit(callbacks=[Losses()])
    oracle = keras.callbacks.TerminateOnNaN()
    oracle.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    oracle.model.stop_training = False
    for batch, loss in enumerate(Losses.losses):
        oracle.on_train_batch_end(batch, {"loss": loss})
        if oracle.model.stop_training:
            break
    assert batch == len(Losses.losses) - 1 < trainer.steps_per_epoch  # stopped at Keras' batch, inside epoch 1
    assert history.epoch == [0] and not np.isfinite(history.history["loss"][0])


def test_batch_hooks_that_do_not_read_logs_cost_no_device_to_host_copy(monkeypatch):
    from jaxcnn.train import steps
    calls = []
    original = steps.to_host
    monkeypatch.setattr(steps, "to_host", lambda m: calls.append(1) or original(m))

    class Counter(Callback):
        batches = 0

        def on_train_batch_end(self, step, logs=None):
            Counter.batches += 1

    Trainer(make_config(epochs=2)).fit(callbacks=[Counter()])
    assert Counter.batches == 2 * 81
    assert len(calls) == 2 * 2  # per epoch: the train metrics and the validation metrics


def test_tensorboard_writes_histograms_input_images_and_batch_scalars(tmp_path):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    config = make_config(epochs=2)
    config.callbacks.tensorboard.update(histogram_freq=1, write_images=True, update_freq="40")
    fit(config, str(tmp_path / "run"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "train"), size_guidance={"tensors": 0}).Reload()
    tags = set(events.Tags()["tensors"])
    assert {"conv1/kernel", "dense/bias", "head/kernel", "inputs", "batch_loss", "batch_accuracy"} <= tags
    assert [t.step for t in events.Tensors("conv1/kernel")] == [1, 2]
    assert [t.step for t in events.Tensors("batch_loss")] == [40, 80, 120, 160]
    image = events.Tensors("inputs")[0].tensor_proto
    width, height = (int(x) for x in tf.make_ndarray(image)[:2])
    assert (width, height) == (8, 8) and len(tf.make_ndarray(image)) == 2 + 8  # 8 encoded sample images
    histogram = tf.make_ndarray(events.Tensors("conv1/kernel")[-1].tensor_proto)  # (buckets, [left, right, count])
    assert histogram[:, 2].sum() == 3 * 3 * 1 * 32


def test_freezing_a_batchnorm_layer_keeps_its_scale_offset_and_statistics():
    import flax.linen as nn
    from jaxcnn import layers, optim
    from jaxcnn.heads import Head
    from jaxcnn.train import steps
    from jaxcnn.train.state import TrainState

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Dense(4, name="dense")(x.reshape(x.shape[0], -1))
            x = layers.BatchNorm(use_running_average=not train, name="bn")(x)
            return nn.Dense(2, name="head")(x)

    model = Net()
    variables = model.init(jax.random.key(0), np.zeros((1, 4, 4, 1), np.float32))
    batch = {"image": jax.random.normal(jax.random.key(1), (8, 4, 4, 1)), "label": np.arange(8) % 2,
             "mask": np.ones(8, np.float32)}
    moved = {}
    for freeze in ((), ("bn",)):
        config = make_config()
        config.optimization.freeze = freeze
        tx, _ = optim.create(config, 10, variables["params"])
        state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                  batch_stats=variables["batch_stats"])
        options = steps.StepOptions(frozen_stats=optim.frozen_mask(freeze, variables["batch_stats"]) if freeze else None)
        new, _ = steps.train_step(state, batch, jax.random.key(2), head=Head.create("softmax", 2), options=options)
        moved[freeze] = {name: not all(jax.tree.leaves(jax.tree.map(np.array_equal, new_tree["bn"], old_tree["bn"])))
                         for name, new_tree, old_tree in (("params", new.params, state.params),
                                                          ("batch_stats", new.batch_stats, state.batch_stats))}
        assert not np.array_equal(new.params["dense"]["kernel"], state.params["dense"]["kernel"])
    assert moved[()] == {"params": True, "batch_stats": True}
    assert moved[("bn",)] == {"params": False, "batch_stats": False}


def test_updating_after_all_gradients_gives_the_same_step_and_is_chosen_for_large_models():
    """The ordered update (large models without BatchNorm: it spares XLA a copy of every donated
    parameter) is the plain update bit for bit, over steps of a donated, jitted train step."""
    from jaxcnn import models, optim
    from jaxcnn.heads import Head
    from jaxcnn.train import steps
    from jaxcnn.train.state import TrainState

    model = models.create("simple_cnn", num_classes=10)
    variables = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    batch = {"image": jax.random.normal(jax.random.key(1), (16, 28, 28, 1)), "label": np.arange(16) % 10,
             "mask": np.ones(16, np.float32)}
    finals = []
    for ordered in (False, True):
        tx, _ = optim.create(make_config(), 10, variables["params"])
        params = jax.tree.map(lambda x: x.copy(), variables["params"])  # the step donates its state
        state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        step = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.key(2), head=Head.create("softmax", 10),
                                                     options=steps.StepOptions(update_after_gradients=ordered)),
                       donate_argnums=0)
        for _ in range(3):
            state, _ = step(state, batch)
        finals.append(state)
    for plain, ordered in zip(jax.tree.leaves((finals[0].params, finals[0].opt_state)),
                              jax.tree.leaves((finals[1].params, finals[1].opt_state))):
        np.testing.assert_array_equal(plain, ordered)

    def chosen(name, shape):
        shapes = jax.eval_shape(lambda: models.create(name, num_classes=10).init(jax.random.key(0), np.zeros(shape)))
        return steps.StepOptions.for_config(make_config(), shapes).update_after_gradients
    assert chosen("vgg16", (1, 32, 32, 3)) and not chosen("simple_cnn", (1, 28, 28, 1))
    assert not chosen("resnet50", (1, 64, 64, 3))  # BatchNorm: ordered, it compiled 3x slower


def test_a_frozen_batch_norm_with_a_shift_normalizes_the_shifted_input_with_its_running_statistics():
    """A frozen BatchNorm (Keras' inference mode in training) of a Keras-layout ResNet takes its
    convolution's bias as `shift`: it normalizes x + shift by the running statistics."""
    import flax.linen as nn
    from jaxcnn import layers
    from jaxcnn.train import steps

    x = 1.5 + 2 * jax.random.normal(jax.random.key(0), (4, 3, 3, 5))
    shift = jax.random.normal(jax.random.key(1), (5,))
    variables = nn.BatchNorm().init(jax.random.key(0), x, use_running_average=True)
    variables = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.key(2), v.shape, v.dtype, 0.5, 1.5), variables)
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, shift):
            return layers.BatchNorm(use_running_average=False, name="bn")(x, shift=shift)

    with steps._frozen_batch_norm(("bn",)):
        ours = Net().apply({k: {"bn": v} for k, v in variables.items()}, x, shift)
    expected = nn.BatchNorm(use_running_average=True).apply(variables, x + shift)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
