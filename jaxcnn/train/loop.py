"""The fit loop: data -> jitted, sharded steps -> metrics -> callbacks -> checkpoints.

Resuming is exact: a checkpoint holds the train state (params, optimizer state with the
learning-rate scale, BatchNorm statistics, EMA, step), the running metrics of the epoch
in progress, the history and every callback's state; the data order and the dropout
noise are functions of (seed, epoch, step). So a run killed at any point and resumed
from its latest checkpoint ends bitwise equal to an uninterrupted one (on CPU).

Checkpoints are saved at each epoch end, every `checkpoint_every_steps` steps, and when
the process receives SIGTERM (then it exits with `config.preempted_exit_code`, 0 by default).

A run with `config.phases` (e.g. the head only, then fine-tuning) changes phase at the start of
a phase's first epoch, as Keras' `compile()` then `fit(initial_epoch=...)` do: a fresh optimizer
(new state, the learning-rate scale back to 1, the schedule restarted) and the phase's train
step (its frozen parameters and BatchNorm layers in inference mode), while the params, BatchNorm
statistics, EMA, step count, history and callback states carry on. A checkpoint records its
phase, so the optimizer state is restored into that phase's structure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcnn import backend
from jaxcnn import config as config_lib
from jaxcnn import data as data_lib
from jaxcnn import models, optim
from jaxcnn.models import summary
from jaxcnn.data import pipeline
from jaxcnn.data.augment import Augment
from jaxcnn.errors import UserError
from jaxcnn.heads import Head
from jaxcnn.train import callbacks as callbacks_lib
from jaxcnn.train import checkpoint as checkpoint_lib
from jaxcnn.train import distributed
from jaxcnn.train import state as state_lib
from jaxcnn.train import steps, workdir as workdir_lib

class Preempted(SystemExit):
    """Raised after SIGTERM, once the checkpoint is saved: the process exits with the
    config's `preempted_exit_code` (0: a clean exit; 143 as a process ended by SIGTERM, so
    that a job scheduler retries it)."""

    def __init__(self, message: str, exit_code: int = 0):
        super().__init__(exit_code)
        self.message = message


class _PreemptionGuard:
    """Turns SIGTERM into a request the loop honours at the next step boundary.

    Single process: a Python signal handler sets a flag. Multi-process: JAX's preemption
    service (started by jax.distributed.initialize) propagates the notice to every process
    and picks the same step on all of them (`reached_preemption_sync_point`).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.multiprocess = jax.process_count() > 1
        self._requested = False
        self._previous = None

    def __enter__(self):
        if self.enabled and not self.multiprocess:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread: leave SIGTERM alone
                self.enabled = False
        return self

    def _handle(self, signum, frame):
        self._requested = True

    def requested(self, step: int) -> bool:
        if not self.enabled:
            return False
        if self.multiprocess:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a run (one phase when the config has no `phases`)."""
    index: int
    config: ml_collections.ConfigDict  # the run's config with the phase's keys replaced
    start_epoch: int
    tx: optax.GradientTransformation
    lr_fn: Callable  # train step -> the scheduled learning rate (restarting at the phase's first step)
    options: steps.StepOptions
    train_step: Callable  # jitted (state, batch, rng) -> (state, metrics)


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
                              if jnp.issubdtype(leaf.dtype, jnp.inexact)] or [True]))


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

        root = jax.random.key(config.seed)
        init_rng, self.dropout_rng, self.shuffle_rng = jax.random.split(root, 3)
        self.replicated = pipeline.replicated(self.mesh)
        try:
            shapes = state_lib.abstract(self.model, self.dataset.image_shape)
        except (TypeError, ValueError) as e:
            raise UserError(f"model '{config.model}' cannot take {self.dataset.image_shape} inputs of "
                            f"'{config.dataset}': {str(e).splitlines()[0]}") from e
        # XLA's options for the compiled steps of this model (jaxcnn.backend: its CPU convolution kernels,
        # and its temporaries in heaps where the largest array of its forward pass on a device's batch fits one).
        @functools.cache  # one trace when the train and eval batches are the same
        def options(batch: int) -> tuple:
            largest = summary.largest_forward_array(self.model, shapes, self.dataset.image_shape,
                                                    max(1, batch // self.mesh.size))
            return backend.compiler_options(shapes["params"], largest)
        self.compiler_options, self.eval_compiler_options = options(config.batch_size), options(eval_batch)
        # Every phase is built now (its patterns checked), so a bad one fails before anything is written.
        self.phases: list[Phase] = []
        for phase_config in config_lib.phase_configs(config):
            start = self.phases[-1].start_epoch + self.phases[-1].config.epochs if self.phases else 0
            self.phases.append(self._build_phase(len(self.phases), phase_config, start, shapes))
        self.phase = self.phases[0]
        self.state = state_lib.create(self.model, self.tx, self.dataset.image_shape, init_rng,
                                      sharding=self.replicated, ema=config.optimization.ema_momentum > 0)
        if config.init_from:  # a resumed run restores its own checkpoint over this in fit()
            from jaxcnn.pretrained import transfer
            self.state, kept = transfer.init_state(self.state, config.init_from)
            if config.verbose != 0 and jax.process_index() == 0:
                print(f"Initialized from {config.init_from}"
                      + (f" (new {', '.join(kept)}: the classes differ)" if kept else ""), flush=True)
        # The loss terms an evaluation adds (label smoothing, penalties) are the same in every phase.
        self._eval_step = backend.jit(functools.partial(steps.eval_step, head=self.head, options=self.options),
                                      self.eval_compiler_options,
                                      in_shardings=(self.replicated, pipeline.batch_sharded(self.mesh)),
                                      out_shardings=self.replicated)
        self.stop_training = False
        self.initial_epoch = 0
        self.epoch_start_batch = 0  # batches of `initial_epoch` done before a mid-epoch resume
        self.history: dict[str, list[float]] = {}
        self.workdir = None
        self.diverged: UserError | None = None  # set when a callback (TerminateOnNaN) stopped a diverged run

    # --- phases ------------------------------------------------------------------------

    def _build_phase(self, index: int, config: ml_collections.ConfigDict, start_epoch: int, shapes: dict) -> Phase:
        tx, lr_fn = optim.create(config, self.steps_per_epoch, shapes["params"])
        start_step = start_epoch * self.steps_per_epoch
        options = steps.StepOptions.for_config(config, shapes)
        repl, batch = self.replicated, pipeline.batch_sharded(self.mesh)
        train_step = backend.jit(functools.partial(steps.train_step, head=self.head, options=options),
                                 self.compiler_options, donate_argnums=0,
                                 in_shardings=(repl, batch, repl), out_shardings=(repl, repl))
        return Phase(index, config, start_epoch, tx, lambda step: lr_fn(step - start_step), options, train_step)

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.phase.tx

    @property
    def lr_fn(self) -> Callable:
        return self.phase.lr_fn

    @property
    def options(self) -> steps.StepOptions:
        return self.phase.options

    @property
    def _train_step(self) -> Callable:
        return self.phase.train_step

    def phase_at(self, epoch: int) -> Phase:
        """The phase that trains the 0-based `epoch`."""
        return [p for p in self.phases if p.start_epoch <= epoch][-1]

    def _phase_state(self, phase: Phase):
        """The train state with `phase`'s optimizer and a fresh optimizer state of it."""
        if phase is self.phase:
            return self.state
        opt_state = jax.jit(phase.tx.init, out_shardings=self.replicated)(self.state.params)
        return self.state.replace(tx=phase.tx, opt_state=opt_state)

    def state_template(self, meta: dict):
        """A train state to restore the checkpoint step of `meta` into: its optimizer state has
        the structure of the step's phase (`checkpoint.restore(workdir, trainer.state_template)`)."""
        return self._phase_state(self.phases[checkpoint_lib.phase(meta, len(self.phases))])

    def _enter_phase(self, phase: Phase) -> None:
        """Starts `phase`: a fresh optimizer (Keras' compile() before fit(initial_epoch=...));
        everything else carries on."""
        self.state, self.phase = self._phase_state(phase), phase
        if self.config.verbose == 0 or jax.process_index() != 0 or len(self.phases) == 1:
            return
        c, params = phase.config, self.state.params
        end = phase.start_epoch + c.epochs
        epochs = f"epoch {end}" if c.epochs == 1 else f"epochs {phase.start_epoch + 1}-{end}"
        bn = ", ".join(phase.options.batch_norm_inference)
        print(f"Phase {phase.index + 1}/{len(self.phases)}, {epochs}: "
              f"{optim.count_trainable(c.optimization.freeze, params):,} of {state_lib.count_params(params):,} "
              f"parameters trainable, {c.optimizer} at {c.learning_rate:g} ({c.schedule} schedule)"
              + (f", BatchNorm in inference mode: {bn}" if bn and self.state.batch_stats else ""), flush=True)

    # --- the learning rate, for callbacks -----------------------------------------------

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next step: the schedule's times the scale."""
        base = np.float32(self.lr_fn(int(self.state.step)))
        return float(base * np.float32(optim.get_lr_scale(self.state.opt_state)))

    def set_learning_rate(self, lr: float) -> None:
        """Sets the scale so that the next step's learning rate is `lr`."""
        base = float(self.lr_fn(int(self.state.step)))
        if base == 0.0:
            raise UserError("the learning rate cannot be set while the schedule is at 0 (warmup start or "
                            "decay end); use a schedule that is not 0 there")
        self.state = self.state.replace(opt_state=optim.set_lr_scale(
            self.state.opt_state, lr / base, sharding=self.replicated))

    # --- evaluation -----------------------------------------------------------

    def evaluate(self, split: pipeline.DeviceSplit, state=None) -> dict[str, float]:
        """Mean loss and accuracy over every example of `split` (padding excluded); the loss
        is Keras' (label smoothing and L1/L2 penalties included), of the EMA weights when
        kept."""
        state = self.state if state is None else state
        total, in_flight = self._empty_metrics(), steps.InFlight()
        for batch in split.batches():
            total = steps.merge(total, in_flight.add(self._eval_step(state, batch)))
        return steps.to_host(total)

    def _empty_metrics(self) -> steps.Metrics:
        return jax.device_put(steps.Metrics.empty(), self.replicated)

    # --- training -------------------------------------------------------------

    def fit(self, workdir: str | None = None, callbacks=()) -> callbacks_lib.History:
        """Trains for `config.epochs` (resuming from `workdir`'s latest checkpoint), holding
        the workdir's lock: a second run on the same workdir is refused."""
        with _workdir_lock(workdir):
            return self._fit(workdir, callbacks)

    def _fit(self, workdir: str | None, callbacks) -> callbacks_lib.History:
        config = self.config
        primary = jax.process_index() == 0
        checkpointer = None
        if workdir is not None:
            workdir_lib.check_run(workdir, config)
            self.workdir = workdir
            if primary:
                os.makedirs(workdir, exist_ok=True)
                workdir_lib.write_json(os.path.join(workdir, "config.json"), config_lib.to_json(config))
                workdir_lib.write_json(os.path.join(workdir, "dataset.json"), self.dataset.describe())
            checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, checkpoint_lib.LATEST_DIR),
                                                       config.checkpoint_max_to_keep)

        verbose = config.verbose if config.verbose >= 0 else (1 if os.isatty(2) else 2)
        cbs = callbacks_lib.CallbackList(
            callbacks_lib.from_config(config, workdir) + list(callbacks)
            + callbacks_lib.loggers(config, workdir, verbose),
            self, {"epochs": config.epochs, "steps": self.steps_per_epoch, "batch_size": config.batch_size,
                   "verbose": verbose})
        history = next(cb for cb in cbs.callbacks if isinstance(cb, callbacks_lib.History))
        running = self._empty_metrics()
        meta = self._restore(checkpointer, cbs) if checkpointer is not None and checkpointer.all_steps() else None
        if meta is not None:
            running, elapsed = meta.pop("running"), meta.get("epoch_seconds", 0.0)
        else:
            elapsed = 0.0
        try:
            cbs.on_train_begin()
            if meta is not None:
                cbs.load_states(meta.get("callbacks", {}), meta.get("callback_arrays"))
            with _PreemptionGuard(enabled=checkpointer is not None) as guard:
                epoch, start = self.initial_epoch, self.epoch_start_batch
                while epoch < config.epochs and not self.stop_training:
                    if epoch == self.phase_at(epoch).start_epoch and start == 0:
                        self._enter_phase(self.phase_at(epoch))
                    self._train_epoch(epoch, start, running, elapsed, cbs, checkpointer, guard)
                    epoch, start, running, elapsed = epoch + 1, 0, self._empty_metrics(), 0.0
                    if guard.requested(int(self.state.step)):  # the epoch's checkpoint is saved already
                        self._preempted(checkpointer)
        finally:
            if checkpointer is not None:
                checkpointer.close()
        cbs.on_train_end()
        return history

    def _restore(self, checkpointer: checkpoint_lib.Checkpointer, cbs: callbacks_lib.CallbackList) -> dict:
        """Restores the latest intact checkpoint into the trainer; returns its meta plus
        `running` (the epoch's running metrics) and `callback_arrays`."""
        def templates(meta: dict) -> dict:
            out = {"state": self.state_template(meta), "running_metrics": self._empty_metrics()}
            out.update({f"callback_{key}": t for key, t in cbs.array_templates().items()})
            return out
        try:
            step, restored = checkpointer.restore_latest(templates)
        except checkpoint_lib.CorruptCheckpoint as e:
            raise UserError(f"no checkpoint in {checkpointer.directory} can be restored ({e}); "
                            "move the folder away to restart the run from scratch") from e
        meta = restored["meta"]
        self.state, self.phase = restored["state"], self.phases[meta.get("phase", 0)]
        self.initial_epoch, self.epoch_start_batch = meta["epoch"], meta.get("batch", 0)
        self.history = meta["history"]
        self.stop_training = meta.get("stopped", False)
        meta["running"] = restored.get("running_metrics", self._empty_metrics()) if self.epoch_start_batch else self._empty_metrics()
        meta["callback_arrays"] = {key[len("callback_"):]: tree for key, tree in restored.items()
                                   if key.startswith("callback_")}
        if int(self.state.step) != step:
            raise UserError(f"checkpoint step {step} holds a state at step {int(self.state.step)}; it is not this run's")
        if self.config.verbose != 0 and jax.process_index() == 0:
            where = f"epoch {self.initial_epoch + 1}, batch {self.epoch_start_batch}" if self.epoch_start_batch \
                else f"the end of epoch {self.initial_epoch}"
            stopped = "; the run was stopped early and stays stopped" if self.stop_training else ""
            print(f"Restored step {step} ({where}) from {checkpointer.directory}{stopped}", flush=True)
        return meta

    def _save(self, checkpointer, cbs, running, epoch: int, batch: int, seconds: float) -> None:
        """Saves the latest checkpoint: `epoch` epochs done, plus `batch` batches of the next."""
        if checkpointer is None:
            return
        step = int(self.state.step)
        if step in checkpointer.all_steps():
            return
        items = {"state": self.state, "running_metrics": running}
        items.update({f"callback_{key}": tree for key, tree in cbs.array_states().items()})
        checkpointer.save(step, items, {"epoch": epoch, "batch": batch, "phase": self.phase.index,
                                        "history": self.history, "callbacks": cbs.state_dicts(),
                                        "stopped": self.stop_training, "epoch_seconds": seconds})

    def _preempted(self, checkpointer) -> None:
        checkpointer.close()
        step = int(self.state.step)
        message = (f"received SIGTERM: saved a checkpoint at step {step} in {checkpointer.directory}; "
                   f"resume with `jaxcnn train --workdir {self.workdir}`")
        if jax.process_index() == 0:
            print(f"jaxcnn: {message}", file=sys.stderr, flush=True)
        raise Preempted(message, self.config.preempted_exit_code)

    def _train_epoch(self, epoch: int, start: int, running, elapsed: float, cbs: callbacks_lib.CallbackList,
                     checkpointer, guard: _PreemptionGuard) -> dict[str, float]:
        began = time.perf_counter() - elapsed
        cbs.on_epoch_begin(epoch)
        step = epoch * self.steps_per_epoch + start
        checked = step  # steps up to here are known finite (checkpointed, or checked at a save)
        every = self.config.checkpoint_every_steps
        in_flight = steps.InFlight()
        for batch in self.train_data.batches(self.shuffle_rng, epoch, start=start):
            cbs.on_train_batch_begin(step)
            self.state, batch_metrics = self._train_step(self.state, batch, self.dropout_rng)
            in_flight.add(batch_metrics)
            running = steps.merge(running, batch_metrics)
            if cbs.wants_batch_end:
                cbs.on_train_batch_end(step, callbacks_lib.LazyLogs(functools.partial(steps.to_host, running)))
            step += 1
            if self.stop_training:  # Keras checks after every batch
                break
            done = step - epoch * self.steps_per_epoch
            if done == self.steps_per_epoch:
                continue  # the epoch-end checkpoint follows
            preempted = guard.requested(step)
            if preempted or (every and step % every == 0):
                diverged = self._divergence(steps.to_host(running)["loss"], checked + 1, step, epoch, checkpointer)
                if diverged is not None:
                    raise diverged
                checked = step
                self._save(checkpointer, cbs, running, epoch, done, time.perf_counter() - began)
            if preempted:
                self._preempted(checkpointer)
        logs = steps.to_host(running)
        # TerminateOnNaN checks every batch, so it stopped at the first non-finite one.
        exact = self.stop_training and any(isinstance(cb, callbacks_lib.TerminateOnNaN) for cb in cbs.callbacks)
        self.diverged = self._divergence(logs["loss"], step if exact else checked + 1, step, epoch, checkpointer)
        if self.diverged is not None and not self.stop_training:
            raise self.diverged
        if self.val_data is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_data).items()})
        logs["learning_rate"] = self.learning_rate
        if len(self.phases) > 1:
            logs["phase"] = self.phase.index + 1
        logs["seconds"] = time.perf_counter() - began
        cbs.on_epoch_end(epoch, logs)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if self.diverged is None:  # a checkpoint never holds a diverged state
            self._save(checkpointer, cbs, self._empty_metrics(), epoch + 1, 0, 0.0)
        return logs

    def _divergence(self, loss: float, first: int, last: int, epoch: int, checkpointer) -> UserError | None:
        """None while the running loss and the parameters are finite; else the error that ends
        the run, naming the steps (counted as checkpoints count them) and the last good checkpoint."""
        if math.isfinite(loss) and bool(_all_finite(self.state.params)):
            return None
        what = f"the training loss became {loss}" if not math.isfinite(loss) else "the parameters became NaN or inf"
        where = f"at step {last}" if first == last else f"between steps {first} and {last}"
        good = checkpointer.latest_step() if checkpointer is not None else None
        saved = (f"; the last good checkpoint is step {good} in {checkpointer.directory}" if good is not None
                 else "; no checkpoint was saved before" if checkpointer is not None else "")
        return UserError(f"{what} in epoch {epoch + 1} ({where}){saved}; lower --config.learning_rate or check "
                         "the data, then train again with a new --workdir")


def fit(config: ml_collections.ConfigDict, workdir: str | None = None, callbacks=()) -> callbacks_lib.History:
    """Trains `config` in `workdir` and writes the final test evaluation to `eval/test.json`.

    On a workdir that already holds this run, training resumes from its latest checkpoint.
    `eval/test.json` records `wall_seconds`: this call's time from loading the data to the
    end of the test evaluation (imports excluded; a resumed run counts its last call only),
    and `cpu_seconds`: the CPU time this process spent over the same span (all threads).
    A multi-host run (config.distributed or the JAX_* environment) joins its processes first.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    resuming = workdir is not None and workdir_lib.check_run(workdir, config)  # fails before loading data
    distributed.initialize(config)
    created = workdir is not None and not os.path.exists(workdir)
    with _workdir_lock(workdir):  # before loading data: a second run on the workdir is refused at once
        return _fit(config, workdir, callbacks, (start, cpu_start), resuming, created)


def _workdir_lock(workdir: str | None):
    """The workdir's lock (workdir_lib.lock), held by the process that writes files (process 0)."""
    if workdir is None or jax.process_index() != 0:
        return contextlib.nullcontext()
    workdir_lib.check(workdir)  # a file is refused before the lock makes a directory
    return workdir_lib.lock(workdir)


def _fit(config, workdir, callbacks, start: tuple[float, float], resuming: bool,
         created: bool) -> callbacks_lib.History:
    """`fit` holding the lock; `start` is (wall clock, process CPU time) when fit began."""
    primary = jax.process_index() == 0
    try:
        trainer = Trainer(config)
        if config.verbose != 0 and primary:
            params = trainer.state.params
            trainable = optim.count_trainable(trainer.phase.config.optimization.freeze, params)
            frozen = f", {trainable:,} trainable" if trainable != state_lib.count_params(params) else ""
            print(f"{'Resuming' if resuming else 'Training'} {config.model} "
                  f"({state_lib.count_params(params):,} parameters{frozen}) on {config.dataset}"
                  + (f" in {workdir}" if workdir else "")
                  + (f", {jax.process_count()} processes" if jax.process_count() > 1 else ""), flush=True)
        history = trainer.fit(workdir, callbacks)
        if trainer.diverged is not None:  # TerminateOnNaN stopped the run: no evaluation of NaN weights
            raise trainer.diverged
    except BaseException:
        # A run that fails before its first checkpoint leaves no workdir behind.
        if primary and created and not workdir_lib.has_checkpoint(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    from jaxcnn import evaluate, plots
    evaluation = evaluate.Evaluation.compute(trainer.state, trainer.head, trainer.test_data,
                                             trainer.dataset.describe(), "test")
    results = evaluation.results
    results.update(epoch=len(trainer.history.get("loss", [])), step=int(trainer.state.step),
                   wall_seconds=round(time.perf_counter() - start[0], 1),
                   cpu_seconds=round(time.process_time() - start[1], 1))
    if workdir is not None and primary:  # the files of `jaxcnn evaluate`, and the training curves
        evaluation.save(workdir)
        plots.training_curves(plots.read_metrics(workdir), os.path.join(workdir, plots.PLOTS_DIR, "curves.png"),
                              title=f"{config.model} on {config.dataset}")
    if trainer.config.verbose != 0 and primary:
        print(f"Test - loss: {results['loss']:.4f} - accuracy: {results['accuracy']:.4f} "
              f"({results['num_examples']} images)", flush=True)
    return history
