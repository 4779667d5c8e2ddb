"""The fit loop: data -> jitted, sharded steps -> metrics -> callbacks -> checkpoints."""

from __future__ import annotations

import functools
import math
import os
import shutil
import time

import jax
import ml_collections

from jaxcnn import config as config_lib
from jaxcnn import data as data_lib
from jaxcnn import models, optim
from jaxcnn.data import pipeline
from jaxcnn.data.augment import Augment
from jaxcnn.errors import UserError
from jaxcnn.heads import Head
from jaxcnn.train import callbacks as callbacks_lib
from jaxcnn.train import state as state_lib
from jaxcnn.train import steps, workdir as workdir_lib
from jaxcnn.train.checkpoint import Checkpointer


class Trainer:
    """Builds everything a run needs from its config; `fit()` trains, `evaluate()` scores.

    Nothing is written until `fit()`, so a bad config or dataset leaves no trace.
    """

    def __init__(self, config: ml_collections.ConfigDict, dataset: data_lib.Dataset | None = None, mesh=None):
        config_lib.validate(config)
        self.config = config
        self.dataset = dataset if dataset is not None else data_lib.load(config)
        self.head = Head.create(config.head, self.dataset.num_classes)
        self.model = models.create(config.model, num_classes=self.head.units, dtype=config.dtype,
                                   **config.model_kwargs.to_dict())
        self.mesh = mesh if mesh is not None else pipeline.make_mesh()
        preprocess = self.dataset.preprocess
        augment = Augment.from_config(config.augment, self.dataset.num_classes)
        self.train_data = pipeline.make_split(self.dataset.train, self.mesh, config.batch_size, preprocess, augment)
        eval_batch = math.lcm(config.eval_batch_size, self.mesh.size)
        self.val_data = (pipeline.make_split(self.dataset.validation, self.mesh, eval_batch, preprocess)
                         if self.dataset.validation is not None else None)
        self.test_data = pipeline.make_split(self.dataset.test, self.mesh, eval_batch, preprocess)
        self.steps_per_epoch = self.train_data.num_batches
        self.tx, self.lr_fn = optim.create(config, self.steps_per_epoch)

        root = jax.random.key(config.seed)
        init_rng, self.dropout_rng, self.shuffle_rng = jax.random.split(root, 3)
        repl = pipeline.replicated(self.mesh)
        try:
            self.state = state_lib.create(self.model, self.tx, self.dataset.image_shape, init_rng, sharding=repl)
        except (TypeError, ValueError) as e:
            raise UserError(f"model '{config.model}' cannot take {self.dataset.image_shape} inputs of "
                            f"'{config.dataset}': {str(e).splitlines()[0]}") from e
        batch = pipeline.batch_sharded(self.mesh)
        self._train_step = jax.jit(functools.partial(steps.train_step, head=self.head), donate_argnums=0,
                                   in_shardings=(repl, batch, repl), out_shardings=(repl, repl))
        self._eval_step = jax.jit(functools.partial(steps.eval_step, head=self.head),
                                  in_shardings=(repl, batch), out_shardings=repl)
        self.stop_training = False
        self.initial_epoch = 0
        self.history: dict[str, list[float]] = {}
        self.workdir = None

    # --- evaluation -----------------------------------------------------------

    def evaluate(self, split: pipeline.DeviceSplit, state=None) -> dict[str, float]:
        """Mean loss and accuracy over every example of `split` (padding excluded)."""
        state = self.state if state is None else state
        total = steps.Metrics.empty()
        for batch in split.batches():
            total = steps.merge(total, self._eval_step(state, batch))
        return steps.to_host(total)

    # --- training -------------------------------------------------------------

    def fit(self, workdir: str | None = None, callbacks=()) -> callbacks_lib.History:
        """Trains for `config.epochs` (resuming from `workdir`'s latest checkpoint)."""
        config = self.config
        checkpointer = None
        if workdir is not None:
            workdir_lib.check_run(workdir, config)
            os.makedirs(workdir, exist_ok=True)
            self.workdir = workdir
            workdir_lib.write_json(os.path.join(workdir, "config.json"), config_lib.to_json(config))
            workdir_lib.write_json(os.path.join(workdir, "dataset.json"), self.dataset.describe())
            checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint_max_to_keep)
            if checkpointer.latest_step() is not None:
                self.state, meta = checkpointer.restore(self.state)
                self.initial_epoch, self.history = meta["epoch"], meta["history"]

        verbose = config.verbose if config.verbose >= 0 else (1 if os.isatty(2) else 2)
        history = callbacks_lib.History()
        cbs = [history, callbacks_lib.ProgbarLogger(verbose, config.log_every_steps)]
        if workdir is not None:
            cbs += [callbacks_lib.MetricsLogger(os.path.join(workdir, "metrics.jsonl")),
                    callbacks_lib.TensorBoard(os.path.join(workdir, "tensorboard"))]
        cbs = callbacks_lib.CallbackList(cbs + list(callbacks), self, {
            "epochs": config.epochs, "steps": self.steps_per_epoch, "batch_size": config.batch_size,
            "verbose": verbose})
        cbs.on_train_begin()
        try:
            for epoch in range(self.initial_epoch, config.epochs):
                logs = self._train_epoch(epoch, cbs)
                for k, v in logs.items():
                    self.history.setdefault(k, []).append(v)
                if checkpointer is not None:
                    checkpointer.save(int(self.state.step), self.state,
                                      {"epoch": epoch + 1, "history": self.history})
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            if checkpointer is not None:
                checkpointer.close()
        cbs.on_train_end()
        return history

    def _train_epoch(self, epoch: int, cbs: callbacks_lib.CallbackList) -> dict[str, float]:
        start = time.perf_counter()
        cbs.on_epoch_begin(epoch)
        running = steps.Metrics.empty()
        step = epoch * self.steps_per_epoch
        for batch in self.train_data.batches(self.shuffle_rng, epoch):
            cbs.on_train_batch_begin(step)
            self.state, batch_metrics = self._train_step(self.state, batch, self.dropout_rng)
            running = steps.merge(running, batch_metrics)
            if cbs.wants_batch_end:
                cbs.on_train_batch_end(step, callbacks_lib.LazyLogs(functools.partial(steps.to_host, running)))
            step += 1
        logs = steps.to_host(running)
        if not math.isfinite(logs["loss"]):
            raise UserError(f"the training loss became {logs['loss']} in epoch {epoch + 1}; "
                            "lower --config.learning_rate or check the data")
        if self.val_data is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_data).items()})
        logs["learning_rate"] = float(self.lr_fn(step))
        logs["seconds"] = time.perf_counter() - start
        return logs


def fit(config: ml_collections.ConfigDict, workdir: str | None = None, callbacks=()) -> callbacks_lib.History:
    """Trains `config` in `workdir` and writes the final test evaluation to `eval/test.json`.

    On a workdir that already holds this run, training resumes from its latest checkpoint.
    `eval/test.json` records `wall_seconds`: this call's time from loading the data to the
    end of the test evaluation (imports excluded; a resumed run counts its last call only).
    """
    start = time.perf_counter()
    resuming = workdir is not None and workdir_lib.check_run(workdir, config)  # fails before loading data
    trainer = Trainer(config)
    if config.verbose != 0:
        print(f"{'Resuming' if resuming else 'Training'} {config.model} "
              f"({state_lib.count_params(trainer.state.params):,} parameters) on {config.dataset}"
              + (f" in {workdir}" if workdir else ""), flush=True)
    created = workdir is not None and not os.path.exists(workdir)
    try:
        history = trainer.fit(workdir, callbacks)
    except BaseException:
        # A run that fails before its first checkpoint leaves no workdir behind.
        if created and not workdir_lib.has_checkpoint(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    from jaxcnn import evaluate, plots
    evaluation = evaluate.Evaluation.compute(trainer.state, trainer.head, trainer.test_data,
                                             trainer.dataset.describe(), "test")
    results = evaluation.results
    results.update(epoch=len(trainer.history.get("loss", [])), step=int(trainer.state.step),
                   wall_seconds=round(time.perf_counter() - start, 1))
    if workdir is not None:  # the files of `jaxcnn evaluate`, and the training curves
        evaluation.save(workdir)
        plots.training_curves(plots.read_metrics(workdir), os.path.join(workdir, plots.PLOTS_DIR, "curves.png"),
                              title=f"{config.model} on {config.dataset}")
    if trainer.config.verbose != 0:
        print(f"Test - loss: {results['loss']:.4f} - accuracy: {results['accuracy']:.4f} "
              f"({results['num_examples']} images)", flush=True)
    return history
