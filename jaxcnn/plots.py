"""The pictures of a run, as PNG files (matplotlib, no display needed).

- `training_curves`: loss and accuracy per epoch (train and validation) and the learning rate;
- `confusion_matrix`: counts and row-normalized, class names on the axes;
- `roc_curves`: one-vs-rest per class plus micro and macro averages, AUC in the legend;
- `misclassified`: a grid of wrongly classified examples with true and predicted labels;
- `filters`: a convolution kernel's filters;
- `feature_maps`: one layer's activations for one image.

Figures are drawn on `matplotlib.figure.Figure` (the Agg canvas), never through pyplot's
global state, so importing this module changes no backend in a user's session. Each file
is written to a temporary name and renamed: never a half-written PNG.
"""

from __future__ import annotations

import math
import os

import numpy as np

PLOTS_DIR = "plots"
MAX_GRID = 64  # panels in a filter or feature-map grid
MAX_LABELED_CLASSES = 30  # beyond this, class names are left off the axes and the legend
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _grid(count: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


# --- training curves -----------------------------------------------------------

def _epochs_table(history) -> dict[str, list[float]]:
    """metrics.jsonl records (a list of dicts) or a Keras History dict -> Keras names -> values."""
    from jaxcnn.train.callbacks import JSONL_NAMES
    if isinstance(history, dict):
        return {k: list(v) for k, v in history.items()}
    keras_names = {jsonl: keras for keras, jsonl in JSONL_NAMES.items()}
    table: dict[str, list[float]] = {}
    for record in history:
        for key, value in record.items():
            table.setdefault(keras_names.get(key, key), []).append(value)
    return table


def training_curves(history, path: str, title: str = "") -> str:
    """Loss, accuracy (train and validation) and learning rate per epoch.

    `history`: the records of a workdir's metrics.jsonl, or Keras' `History.history` dict.
    The best validation loss and accuracy are marked, and the start of each phase of a run
    in phases (its `phase` entries) by a dotted line.
    """
    from matplotlib.ticker import MaxNLocator
    table = _epochs_table(history)
    if not table.get("loss"):
        from jaxcnn.errors import UserError
        raise UserError("no epochs to plot: the history is empty; train the run first")
    epochs = table.get("epoch") or list(range(1, len(table["loss"]) + 1))
    has_lr = bool(table.get("learning_rate"))
    fig = _figure(5.0 * (3 if has_lr else 2), 4.0)
    axes = fig.subplots(1, 3 if has_lr else 2)
    marker = "o" if len(epochs) <= 30 else None
    for ax, metric, best in ((axes[0], "loss", np.argmin), (axes[1], "accuracy", np.argmax)):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if table.get(key):
                ax.plot(epochs, table[key], marker=marker, markersize=3, label=label)
        if table.get(f"val_{metric}"):
            values = table[f"val_{metric}"]
            i = int(best(values))
            ax.scatter([epochs[i]], [values[i]], s=80, facecolors="none", edgecolors="red", zorder=3,
                       label=f"best validation: {values[i]:.4f} (epoch {epochs[i]})")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if has_lr:
        lr = np.asarray(table["learning_rate"], float)
        axes[2].plot(epochs, lr, marker=marker, markersize=3, color="tab:green")
        if lr.min() > 0 and lr.max() / lr.min() > 20:
            axes[2].set_yscale("log")
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of epoch)")
        axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[2].grid(alpha=0.3)
    phases = table.get("phase") or []
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            for ax in axes:
                ax.axvline(epochs[i] - 0.5, color="gray", linestyle=":")
            axes[-1].annotate(f"phase {phases[i]}", (epochs[i] - 0.5, 1.0), xycoords=("data", "axes fraction"),
                             xytext=(3, -12), textcoords="offset points", color="gray", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --- evaluation ------------------------------------------------------------------

def confusion_matrix(labels, probs, class_names, path: str, title: str = "") -> str:
    """Counts and row-normalized confusion matrices (rows = true class) side by side."""
    from sklearn.metrics import ConfusionMatrixDisplay
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    from jaxcnn.evaluate import predicted_classes
    n = len(class_names)
    predicted, ids = predicted_classes(probs), list(range(n))
    labeled = n <= MAX_LABELED_CLASSES
    side = 4.0 + 0.3 * n if labeled else 8.0  # room for the names and counts; at most ~3,000 px in all
    fig = _figure(2 * side + 1.5, side)
    for ax, normalize, fmt, name in zip(fig.subplots(1, 2), (None, "true"), ("d", ".2f"),
                                        ("counts", "normalized by true class")):
        matrix = sk_confusion_matrix(labels, predicted, labels=ids, normalize=normalize)
        display = ConfusionMatrixDisplay(matrix, display_labels=list(class_names) if labeled else None)
        display.plot(ax=ax, cmap="Blues", values_format=fmt, include_values=n <= 20, colorbar=True,
                     xticks_rotation="vertical" if n > 10 else "horizontal")
        if not labeled:
            ax.set(xticks=[], yticks=[])
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def roc_curves(labels, probs, class_names, path: str, title: str = "") -> str:
    """ROC curves with their AUC (the numbers of `jaxcnn.evaluate.auc_roc`) in the legend.

    Binary: the curve of the second class. Multi-class (one-vs-rest): each class present in
    the labels, the micro average (all pairs pooled) and the macro average (the mean true
    positive rate over the classes, on a common false-positive-rate grid).
    """
    from sklearn.metrics import roc_curve
    from sklearn.preprocessing import label_binarize

    from jaxcnn.evaluate import auc_roc
    labels, probs = np.asarray(labels), np.asarray(probs)
    auc = auc_roc(labels, probs, class_names)
    fmt = lambda value: "undefined" if value is None else f"{value:.4f}"  # noqa: E731
    fig = _figure(7.5, 6.5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="chance (AUC = 0.5)")
    if len(class_names) == 2:
        if auc is not None:
            fpr, tpr, _ = roc_curve(labels == 1, probs[:, 1])
            ax.plot(fpr, tpr, linewidth=2, label=f"{class_names[1]} (AUC = {fmt(auc)})")
        else:
            ax.text(0.5, 0.5, "AUC undefined: one class only", ha="center")
    else:
        onehot = label_binarize(labels, classes=list(range(len(class_names))))
        grid = np.linspace(0, 1, 1001)
        tprs = []
        many = len(class_names) > MAX_LABELED_CLASSES
        for c, name in enumerate(class_names):
            if auc["per_class"][name] is None:
                continue
            fpr, tpr, _ = roc_curve(onehot[:, c], probs[:, c])
            tprs.append(np.interp(grid, fpr, tpr))
            if many:
                ax.plot(fpr, tpr, color="gray", alpha=0.25, linewidth=0.7,
                        label=f"each class ({len(class_names)})" if c == 0 else None)
            else:
                ax.plot(fpr, tpr, linewidth=1, alpha=0.8, label=f"{name} (AUC = {fmt(auc['per_class'][name])})")
        fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
        ax.plot(fpr, tpr, color="deeppink", linestyle="--", linewidth=2.5,
                label=f"micro-average (AUC = {fmt(auc['micro'])})")
        if tprs:
            mean_tpr = np.mean(tprs, axis=0)
            mean_tpr[0] = 0.0
            ax.plot(grid, mean_tpr, color="navy", linestyle="--", linewidth=2.5,
                    label=f"macro-average (AUC = {fmt(auc['macro'])})")
        missing = [name for name, value in auc["per_class"].items() if value is None]
        if missing:
            ax.plot([], [], " ", label=f"no curve (class absent): {', '.join(missing[:5])}"
                                       + (" ..." if len(missing) > 5 else ""))
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
           title=title or "ROC curves")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small" if len(class_names) <= 12 else "x-small")
    return _save(fig, path)


def _show_image(ax, image, pixel_max: float) -> None:
    image = np.asarray(image, np.float32) / pixel_max
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(np.clip(image[..., :3], 0.0, 1.0))
    ax.set(xticks=[], yticks=[])


def misclassified(images, labels, probs, class_names, path: str, pixel_max: float = 255.0,
                  max_examples: int = 36, title: str = "") -> str:
    """A grid of misclassified examples, the most confidently wrong first, each titled with
    its true class and its predicted class and probability.

    `images`: the split's raw images (N, H, W, C) in [0, pixel_max] (host or device array).
    """
    from jaxcnn.evaluate import predicted_classes
    labels, probs = np.asarray(labels), np.asarray(probs)
    predicted = predicted_classes(probs)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")][:max_examples]
    heading = title or f"misclassified: {len(wrong)} of {len(labels)}"
    if not len(chosen):
        fig = _figure(4.0, 2.0)
        fig.text(0.5, 0.5, f"no misclassified examples\n(all {len(labels)} correct)", ha="center", va="center")
        return _save(fig, path)
    rows, cols = _grid(len(chosen))
    fig = _figure(1.9 * cols, 2.1 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    pictures = np.asarray(images[np.sort(chosen)])  # one gather, in index order
    by_index = dict(zip(np.sort(chosen), pictures))
    for ax, i in zip(axes, chosen):
        _show_image(ax, by_index[i], pixel_max)
        guess = predicted[i]
        ax.set_title(f"true: {class_names[labels[i]]}\npred: {class_names[guess]} ({probs[i, guess]:.2f})", fontsize=8)
    for ax in axes[len(chosen):]:
        ax.axis("off")
    fig.suptitle(heading)
    return _save(fig, path)


# --- inside the network ----------------------------------------------------------

def _mosaic(tiles: np.ndarray, cols: int, border: int) -> np.ndarray:
    """Tiles (n, h, w) or (n, h, w, 3), each scaled to [0, 1] on its own range, in one array
    with NaN borders (drawn as background): one image draws much faster than an axes per tile."""
    n, h, w = tiles.shape[:3]
    lo = tiles.reshape(n, -1).min(axis=1).reshape((n,) + (1,) * (tiles.ndim - 1))
    hi = tiles.reshape(n, -1).max(axis=1).reshape((n,) + (1,) * (tiles.ndim - 1))
    tiles = (tiles - lo) / np.maximum(hi - lo, 1e-12)
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + border) + border, cols * (w + border) + border) + tiles.shape[3:], np.nan, np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = border + r * (h + border), border + c * (w + border)
        out[top:top + h, left:left + w] = tile
    return out


def _draw_mosaic(ax, tiles: np.ndarray, cmap: str) -> None:
    """Draws the tiles in a grid on `ax`, each numbered in the border above it."""
    import matplotlib
    background = (0.82, 0.88, 0.95)  # light blue: tells the tiles apart, whatever their values
    n, h, w = tiles.shape[:3]
    cols = _grid(n)[1]
    border = max(1, math.ceil(max(h, w) / 5))
    mosaic = _mosaic(tiles, cols, border)
    if mosaic.ndim == 3:  # RGB
        mosaic = np.where(np.isnan(mosaic), np.asarray(background, np.float32), mosaic)
    ax.imshow(mosaic, cmap=matplotlib.colormaps[cmap].with_extremes(bad=background), vmin=0.0, vmax=1.0,
              interpolation="nearest")
    for i in range(n):
        r, c = divmod(i, cols)
        ax.text(border + c * (w + border), border + r * (h + border) - 0.5, str(i), fontsize=6, va="bottom")
    ax.set(xticks=[], yticks=[])
    ax.set_frame_on(False)


def filters(kernel, path: str, title: str = "") -> str:
    """The filters of a convolution kernel (kh, kw, in, out), each scaled to its own range.

    Three input channels are shown as RGB, one as grayscale; otherwise the mean over input
    channels. At most `MAX_GRID` filters.
    """
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 4:
        from jaxcnn.errors import UserError
        raise UserError(f"a convolution kernel is (height, width, in, out), got shape {kernel.shape}")
    count = min(kernel.shape[-1], MAX_GRID)
    tiles = np.moveaxis(kernel[..., :count], -1, 0)  # (count, kh, kw, in)
    tiles = tiles if tiles.shape[-1] == 3 else tiles.mean(axis=-1)
    rows, cols = _grid(count)
    fig = _figure(0.9 * cols + 1.0, 0.9 * rows + 1.0)
    _draw_mosaic(fig.subplots(), tiles, "gray")
    shown = f"{count} of {kernel.shape[-1]}" if count < kernel.shape[-1] else str(count)
    fig.suptitle(title or f"{shown} filters {kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}")
    return _save(fig, path)


def feature_maps(activations, path: str, image=None, title: str = "") -> str:
    """One layer's activations for one image: its channels (H, W, C), each with its own color
    scale, beside the input `image` (as the model saw it) when given; a dense layer's (D,) as bars."""
    activations = np.asarray(activations, np.float32)
    if activations.ndim == 1:
        fig = _figure(10.0, 3.5)
        ax = fig.subplots()
        ax.bar(np.arange(len(activations)), activations, width=1.0)
        ax.set(xlabel="unit", ylabel="activation", title=title or f"{len(activations)} units")
        return _save(fig, path)
    if activations.ndim != 3:
        from jaxcnn.errors import UserError
        raise UserError(f"feature maps are (height, width, channels) or (units,), got shape {activations.shape}")
    count = min(activations.shape[-1], MAX_GRID)
    rows, cols = _grid(count)
    side = max(1.2 * cols, 4.0)
    fig = _figure(side + (side / 3 if image is not None else 0) + 0.5, side * rows / cols + 1.0)
    if image is not None:
        input_ax, maps_ax = fig.subplots(1, 2, width_ratios=[1, 3])
        image = np.asarray(image, np.float32)  # preprocessed (maybe normalized): shown on its own range
        _show_image(input_ax, image - image.min(), max(float(image.max() - image.min()), 1e-12))
        input_ax.set_title("input", fontsize=9)
    else:
        maps_ax = fig.subplots()
    _draw_mosaic(maps_ax, np.moveaxis(activations[..., :count], -1, 0), "viridis")
    shown = f"{count} of {activations.shape[-1]}" if count < activations.shape[-1] else str(count)
    fig.suptitle(title or f"{shown} feature maps {activations.shape[0]}x{activations.shape[1]}")
    return _save(fig, path)


# --- a run's plots ---------------------------------------------------------------

def read_metrics(workdir: str) -> list[dict]:
    """The per-epoch records of a workdir's metrics.jsonl ([] when there are none)."""
    import json
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_run(workdir: str, checkpoint: str = "latest") -> tuple[list[str], list[str]]:
    """The training curves (metrics.jsonl) and the first convolution's filters of a run, in
    workdir/plots/; returns (paths written, notes on what could not be drawn)."""
    from jaxcnn import inference
    run = inference.load_run(workdir, checkpoint)
    out, paths, notes = os.path.join(workdir, PLOTS_DIR), [], []
    records = read_metrics(workdir)
    if records:
        paths.append(training_curves(records, os.path.join(out, "curves.png"),
                                     title=f"{run.config.model} on {run.config.dataset}"))
    else:
        notes.append("no training curves: the workdir has no metrics.jsonl (it was not trained here)")
    conv = run.first_conv_kernel()
    if conv is not None:
        name, kernel = conv
        paths.append(filters(kernel, os.path.join(out, f"filters_{name.replace('/', '_')}.png"),
                             title=f"{run.config.model}: filters of {name} {kernel.shape[0]}x{kernel.shape[1]}, "
                                   f"{kernel.shape[2]} in, {kernel.shape[3]} out ({run.checkpoint}, step {run.step})"))
    else:
        notes.append(f"no filters: {run.config.model} has no convolution layer")
    return paths, notes


def plot_feature_maps(workdir: str, layer: str, images, checkpoint: str = "latest") -> list[str]:
    """The feature maps of `layer` (e.g. `conv1`, or `conv1_act` as sown) for each image file,
    written to workdir/plots/feature_maps_<layer>_<image name>.png."""
    from jaxcnn import inference
    from jaxcnn.errors import UserError
    run = inference.load_run(workdir, checkpoint)
    layer = layer[:-len("_act")] if layer.endswith("_act") else layer
    paths = []
    for image_path, image in zip(images, inference.load_images(images, run.dataset_info)):
        maps = run.feature_maps(image)
        if layer not in maps:
            raise UserError(f"{run.config.model} has no layer {layer!r} with feature maps; "
                            f"its layers: {', '.join(maps) or 'none'}")
        stem = os.path.splitext(os.path.basename(image_path))[0]
        name = f"feature_maps_{layer.replace('/', '_')}_{stem}.png"
        activations = maps[layer]
        shape = "x".join(map(str, activations.shape))
        paths.append(feature_maps(activations, os.path.join(workdir, PLOTS_DIR, name), image=image,
                                  title=f"{run.config.model} {layer} ({shape}) on {os.path.basename(image_path)}"))
    return paths
