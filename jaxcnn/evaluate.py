"""Evaluation: predictions over a split, the report a researcher publishes, its files.

    from jaxcnn import evaluate
    results = evaluate.report(labels, probs, class_names)   # a dict, every number from scikit-learn

A run's evaluation writes `eval/<split>.json` (the report), `eval/<split>_predictions.npz`
(`labels`, `probs` N x C and `class_names`, so anyone can recompute) and the pictures
`plots/<split>_confusion_matrix.png`, `<split>_roc.png`, `<split>_misclassified.png`.
`jaxcnn evaluate` and the end of `jaxcnn train` produce the same files (`Evaluation`).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import time

import numpy as np

from jaxcnn.errors import UserError
from jaxcnn.train import workdir as workdir_lib

SPLITS = ("train", "validation", "test")
TOP_K = 5  # top5_accuracy is reported when there are more classes than this


# --- the report ----------------------------------------------------------------

def _check(labels, probs, class_names) -> tuple[np.ndarray, np.ndarray, list[str]]:
    labels, probs, class_names = np.asarray(labels), np.asarray(probs), [str(n) for n in class_names]
    if probs.ndim != 2 or labels.shape != probs.shape[:1] or not len(labels):
        raise UserError(f"predictions need labels (N,) and probs (N, classes) with N > 0, got shapes "
                        f"{labels.shape} and {probs.shape}; pass one row of class probabilities per label")
    if probs.shape[1] != len(class_names) or len(class_names) < 2:
        raise UserError(f"probs have {probs.shape[1]} columns for {len(class_names)} class names; "
                        "pass one name per class (at least 2)")
    if len(set(class_names)) != len(class_names):
        raise UserError(f"class names repeat: {class_names}; name each class once")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(class_names):
        raise UserError(f"labels must be class indices in [0, {len(class_names)}), got {labels.dtype} values "
                        f"{labels.min()}..{labels.max()}")
    return labels, probs, class_names


def predicted_classes(probs) -> np.ndarray:
    """The predicted class of each row: the most probable (for a sigmoid head, p > 0.5)."""
    return np.argmax(np.asarray(probs), axis=1)


def _one_auc(is_class, scores) -> float | None:
    """ROC AUC of one class against the rest; None where it is undefined (one kind of label only)."""
    from sklearn.metrics import roc_auc_score
    if is_class.all() or not is_class.any():
        return None
    return float(roc_auc_score(is_class, scores))


def auc_roc(labels, probs, class_names) -> float | dict | None:
    """Binary: the AUC of the second class's probability (None with one class present).

    Multi-class, one-vs-rest: `per_class` (None for a class absent from the labels, where it
    is undefined), `macro` (their mean over the classes where it is defined: with every class
    present this is scikit-learn's `roc_auc_score(multi_class='ovr', average='macro')`) and
    `micro` (the AUC of all (example, class) pairs pooled).
    """
    from sklearn.metrics import roc_auc_score
    labels, probs, class_names = _check(labels, probs, class_names)
    if len(class_names) == 2:
        return _one_auc(labels == 1, probs[:, 1])
    per_class = {name: _one_auc(labels == c, probs[:, c]) for c, name in enumerate(class_names)}
    defined = [v for v in per_class.values() if v is not None]
    micro = roc_auc_score(labels, probs, multi_class="ovr", average="micro", labels=range(len(class_names)))
    return {"macro": float(np.mean(defined)) if defined else None, "micro": float(micro), "per_class": per_class}


def report(labels, probs, class_names, loss: float | None = None) -> dict:
    """The evaluation report of predictions `probs` (N x C) for integer `labels` (N,).

    Every number is scikit-learn's on the predicted classes `argmax(probs)`, over all C
    classes (a class never predicted has precision 0; one absent from the labels, recall 0):
    `accuracy`, `top5_accuracy` (more than 5 classes), `loss` (the given mean loss, e.g. the
    model's exact loss from its logits; else the log loss of `probs`), `confusion_matrix`
    (rows = true class), `per_class` (precision, recall, f1, support by class name),
    `macro_avg` and `weighted_avg`, `auc_roc` (see `auc_roc`), `num_examples`, `class_names`.
    """
    from sklearn import metrics
    labels, probs, class_names = _check(labels, probs, class_names)
    ids = list(range(len(class_names)))
    predicted = predicted_classes(probs)
    results = {"num_examples": len(labels), "class_names": class_names,
               "accuracy": float(metrics.accuracy_score(labels, predicted))}
    if len(ids) > TOP_K:
        results[f"top{TOP_K}_accuracy"] = float(metrics.top_k_accuracy_score(labels, probs, k=TOP_K, labels=ids))
    results["loss"] = float(loss) if loss is not None else float(metrics.log_loss(labels, probs, labels=ids))
    results["confusion_matrix"] = metrics.confusion_matrix(labels, predicted, labels=ids).tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=ids, zero_division=0)
    results["per_class"] = {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                                   "support": int(support[c])} for c, name in enumerate(class_names)}
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(labels, predicted, labels=ids, average=average,
                                                             zero_division=0)
        results[f"{average}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    results["auc_roc"] = auc_roc(labels, probs, class_names)
    return results


def classification_report(labels, probs, class_names) -> str:
    """scikit-learn's text classification report of the predicted classes (4 digits)."""
    from sklearn import metrics
    labels, probs, class_names = _check(labels, probs, class_names)
    return metrics.classification_report(labels, predicted_classes(probs), labels=range(len(class_names)),
                                         target_names=class_names, digits=4, zero_division=0)


def summary(results: dict) -> str:
    """One line of the headline numbers of a report."""
    parts = [f"accuracy {results['accuracy']:.4f}"]
    if f"top{TOP_K}_accuracy" in results:
        parts.append(f"top-{TOP_K} accuracy {results[f'top{TOP_K}_accuracy']:.4f}")
    parts.append(f"loss {results['loss']:.4f}")
    auc = results.get("auc_roc")
    if isinstance(auc, dict):
        auc = auc["macro"]
        parts.append("AUC-ROC (macro) " + ("undefined" if auc is None else f"{auc:.4f}"))
    else:
        parts.append("AUC-ROC " + ("undefined" if auc is None else f"{auc:.4f}"))
    return ", ".join(parts)


# --- predictions over a split --------------------------------------------------

def _predict_batch(state, batch, *, head):
    logits = state.apply_fn(state.variables(), batch["image"], train=False)
    return head.probabilities(logits), head.loss(logits, batch["label"])


@functools.lru_cache(maxsize=8)
def _predict_fn(head, mesh, compiler_options: tuple):
    from jaxcnn import backend
    from jaxcnn.data import pipeline
    return backend.jit(functools.partial(_predict_batch, head=head), compiler_options,
                       in_shardings=(pipeline.replicated(mesh), pipeline.batch_sharded(mesh)),
                       out_shardings=pipeline.batch_sharded(mesh))


def predict(state, head, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (N,), probabilities (N, C) and per-example losses (N,) of every example of the
    split pipeline `data` (in memory or streamed), in the split's order (padding dropped)."""
    from jaxcnn import backend
    step = _predict_fn(head, data.mesh, backend.compiler_options(state.params))
    labels, probs, losses = [], [], []
    for batch in data.batches():  # no key: the split's own order, padding at the end
        batch_probs, batch_losses = step(state, batch)
        labels.append(np.asarray(batch["label"]))
        probs.append(np.asarray(batch_probs))
        losses.append(np.asarray(batch_losses))
    n = data.num_examples
    return np.concatenate(labels)[:n], np.concatenate(probs)[:n], np.concatenate(losses)[:n]


class _StreamedImages:
    """A streamed split's images by index, on a 0-1 scale, read in one more pass (for the
    misclassified grid, which shows a few of them): `images[indices]`."""

    def __init__(self, data, dataset_info: dict):
        self.data, self.mean, self.std = data, dataset_info.get("mean"), dataset_info.get("std")

    def __getitem__(self, indices) -> np.ndarray:
        wanted, found, offset = {int(i) for i in np.atleast_1d(indices)}, {}, 0
        for batch in self.data.batches():
            images, real = np.asarray(batch["image"]), int(np.asarray(batch["mask"]).sum())
            found.update({offset + j: images[j] for j in range(real) if offset + j in wanted})
            offset += real
            if len(found) == len(wanted):
                break
        pictures = np.stack([found[int(i)] for i in np.atleast_1d(indices)])
        if self.mean is not None:  # undo the normalization for display
            pictures = pictures * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        return pictures


@dataclasses.dataclass
class Evaluation:
    """A split's predictions and report; `save()` writes its files into a workdir."""
    split: str
    labels: np.ndarray
    probs: np.ndarray
    results: dict
    images: object  # the split's images (indexable by example), for the misclassified grid
    pixel_max: float

    @classmethod
    def compute(cls, state, head, data, dataset_info: dict, split: str) -> Evaluation:
        """Predicts every example of the split pipeline `data` and reports on it; the loss is the
        model's own (from its logits, as in training), not the log loss of rounded probabilities."""
        labels, probs, losses = predict(state, head, data)
        results = report(labels, probs, dataset_info["class_names"], loss=np.mean(losses, dtype=np.float64))
        if hasattr(data, "images"):  # in device memory: the stored pixels
            images, pixel_max = data.images, dataset_info["pixel_max"]
        else:
            images, pixel_max = _StreamedImages(data, dataset_info), 1.0
        return cls(split, labels, probs, {"split": split, **results}, images, pixel_max)

    def save(self, workdir: str, plots: bool = True) -> list[str]:
        """Writes eval/<split>.json and eval/<split>_predictions.npz, and (with `plots`) the
        confusion matrix, ROC curves and misclassified examples; returns the paths written."""
        paths = [write(workdir, self.split, self.results),
                 write_predictions(workdir, self.split, self.labels, self.probs, self.results["class_names"])]
        if plots:
            from jaxcnn import plots as plots_lib
            names = self.results["class_names"]

            def png(kind):
                return os.path.join(workdir, plots_lib.PLOTS_DIR, f"{self.split}_{kind}.png")
            paths += [plots_lib.confusion_matrix(self.labels, self.probs, names, png("confusion_matrix")),
                      plots_lib.roc_curves(self.labels, self.probs, names, png("roc")),
                      plots_lib.misclassified(self.images, self.labels, self.probs, names, png("misclassified"),
                                              pixel_max=self.pixel_max)]
        return paths


def evaluate_run(run, split: str = "test", data_dir: str | None = None) -> Evaluation:
    """Evaluates a loaded run (`jaxcnn.inference.load_run`) on its dataset's `split`.

    The data is loaded as training loaded it (same validation carve-out); `data_dir`
    overrides the run's TFDS data_dir when the dataset has moved.
    """
    import math

    from jaxcnn import data as data_lib
    from jaxcnn.data import pipeline
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    start = time.perf_counter()
    config = run.config
    if data_dir is not None:
        config = config.copy_and_resolve_references()
        config.data_dir = data_dir
    dataset = data_lib.load(config)
    described = dataset.describe()
    for key in ("image_shape", "class_names"):
        if described[key] != run.dataset_info[key]:
            raise UserError(f"dataset '{config.dataset}' now has {key} {described[key]}, but the run was trained "
                            f"on {run.dataset_info[key]}; evaluate on the data the run was trained on")
    chosen = getattr(dataset, split)
    if chosen is None:
        raise UserError(f"the run has no {split} split (config.validation_split is 0 and the dataset has none); "
                        f"use --split test or --split train")
    mesh = pipeline.make_mesh()
    # The run's preprocessing (scale, resize, normalization), as training prepared every split.
    data = pipeline.make_split(chosen, mesh, math.lcm(config.eval_batch_size, mesh.size), dataset.preprocess)
    evaluation = Evaluation.compute(run.state, run.head, data, run.dataset_info, split)
    evaluation.results.update(checkpoint=run.checkpoint, epoch=run.epoch, step=run.step,
                              seconds=round(time.perf_counter() - start, 1))
    return evaluation


# --- files ---------------------------------------------------------------------

def write(workdir: str, split: str, results: dict) -> str:
    """Writes `results` to eval/<split>.json atomically; returns the path."""
    path = os.path.join(workdir, "eval", f"{split}.json")
    workdir_lib.write_json(path, {"split": split, **results})
    return path


def write_predictions(workdir: str, split: str, labels, probs, class_names) -> str:
    """Writes eval/<split>_predictions.npz (`labels`, `probs`, `class_names`) atomically."""
    path = os.path.join(workdir, "eval", f"{split}_predictions.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=np.asarray(labels, np.int32), probs=np.asarray(probs, np.float32),
                        class_names=np.asarray(class_names, dtype=str))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)
    return path


def read_predictions(workdir: str, split: str = "test") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads eval/<split>_predictions.npz back: (labels, probs, class_names)."""
    path = os.path.join(workdir, "eval", f"{split}_predictions.npz")
    if not os.path.isfile(path):
        raise UserError(f"no predictions at {path}; run `jaxcnn evaluate --workdir {workdir} --split {split}` first")
    with np.load(path) as data:
        return data["labels"], data["probs"], [str(n) for n in data["class_names"]]
