"""The `jaxcnn` command.

    jaxcnn train [--config experiments/X.py[:arg]] [--workdir DIR] [--config.key=value ...]
    jaxcnn models
    jaxcnn models summary NAME [--input HxWxC] [--classes N]
    jaxcnn data prepare NAME --source DIR [--data_dir DIR] [--overwrite]
    jaxcnn data prepare folder --source DIR [--name NAME] [--skip_corrupt] [--resize HxW]
    jaxcnn evaluate --workdir DIR [--split test] [--checkpoint latest|best]
    jaxcnn predict --workdir DIR IMAGE [IMAGE ...] [--top_k K] [--json]
    jaxcnn visualize --workdir DIR [--layer NAME IMAGE [IMAGE ...]]
    jaxcnn convert --from keras|torch --arch NAME --weights FILE --out DIR

Bad input ends with one line on stderr naming the problem and its fix, exit code 2.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import os
import sys

from jaxcnn.errors import UserError


def _parse_overrides(tokens: list[str]) -> dict[str, str]:
    """`--config.key=value` and `--config.key value` tokens -> {'key': 'value'}."""
    overrides, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--config."):
            raise UserError(f"unrecognized argument {token!r}; see `jaxcnn train --help`")
        key, eq, value = token[len("--config."):].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise UserError(f"{token} needs a value: {token}=VALUE")
            value, i = tokens[i + 1], i + 1
        overrides[key] = value
        i += 1
    return overrides


def _default_workdir(config_path: str | None) -> str:
    name = os.path.splitext(os.path.basename(config_path.partition(":")[0]))[0] if config_path else "digits_cnn"
    return os.path.join("runs", name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def cmd_train(args, extra: list[str]) -> int:
    from jaxcnn import config as config_lib
    from jaxcnn.train import loop, workdir as workdir_lib

    overrides = _parse_overrides(extra)
    workdir = args.workdir or _default_workdir(args.config)
    if workdir_lib.check(workdir) and not args.config:  # `jaxcnn train --workdir DIR` continues DIR's own run
        config = config_lib.from_json_file(os.path.join(workdir, "config.json"))
    else:
        config = config_lib.load(args.config)
    config = config_lib.apply_overrides(config, overrides)
    loop.fit(config, workdir)
    return 0


def cmd_models(args, extra) -> int:
    from jaxcnn import models
    if args.models_command == "summary":
        from jaxcnn.models import summary
        shape = summary.parse_input_shape(args.input) if args.input else models.input_shape(args.name)
        model = models.create(args.name, num_classes=args.classes)
        print(summary.summarize(model, shape, name=args.name).format())
        return 0
    for name in models.names():
        print(name)
    return 0


def cmd_data_prepare(args, extra) -> int:
    from jaxcnn.data import prepare
    resize = prepare.parse_size(args.resize) if args.resize else None
    path, built = prepare.prepare(args.name, args.source, args.data_dir, overwrite=args.overwrite,
                                  dataset_name=args.dataset_name, skip_corrupt=args.skip_corrupt, resize=resize,
                                  test_fraction=args.test_fraction)
    print(f"prepared {prepare.summary(path)} in {path}" if built else
          f"{prepare.summary(path)} is already prepared in {path} (--overwrite rebuilds it)")
    return 0


def cmd_evaluate(args, extra) -> int:
    from jaxcnn import evaluate, inference
    run = inference.load_run(args.workdir, args.checkpoint)
    evaluation = evaluate.evaluate_run(run, args.split, data_dir=args.data_dir)
    paths = evaluation.save(args.workdir)
    results = evaluation.results
    print(f"{args.split} split of {run.config.dataset}: {results['num_examples']} images, {run.checkpoint} "
          f"checkpoint (epoch {run.epoch}, step {run.step})")
    print(evaluate.summary(results) + "\n")
    print(evaluate.classification_report(evaluation.labels, evaluation.probs, results["class_names"]))
    print("wrote " + ", ".join(os.path.relpath(p, args.workdir) for p in paths))
    return 0


def cmd_predict(args, extra) -> int:
    import json

    from jaxcnn import inference
    run = inference.load_run(args.workdir, args.checkpoint)
    probs = run.probabilities(inference.load_images(args.images, run.dataset_info))
    ranked = [inference.top_k(row, run.class_names, args.top_k) for row in probs]
    if args.json:
        print(json.dumps([{"image": path, "top_k": [{"class": name, "probability": p} for name, p in top]}
                          for path, top in zip(args.images, ranked)], indent=2))
        return 0
    width = max(len(name) for name in run.class_names)
    for path, top in zip(args.images, ranked):
        print(path)
        for rank, (name, p) in enumerate(top, 1):
            print(f"  {rank}. {name:<{width}}  {p:.4f}")
    return 0


def cmd_visualize(args, extra) -> int:
    from jaxcnn import plots
    if args.layer and not args.images:
        raise UserError("--layer needs an IMAGE: jaxcnn visualize --workdir DIR --layer NAME IMAGE")
    if args.images and not args.layer:
        raise UserError("IMAGE needs --layer NAME (the layer whose feature maps to draw)")
    if args.layer:
        paths, notes = plots.plot_feature_maps(args.workdir, args.layer, args.images, args.checkpoint), []
    else:
        paths, notes = plots.plot_run(args.workdir, args.checkpoint)
    for note in notes:
        print(note)
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_convert(args, extra) -> int:
    from jaxcnn import pretrained
    imported = pretrained.convert(args.source, args.arch, args.weights, args.out)
    prep = imported.preprocessing
    top = f"{imported.num_classes} classes" if imported.num_classes else "no top (for init_from)"
    print(f"converted {args.source} weights {args.weights} into {args.arch} ({top}, {prep['mode']} preprocessing) "
          f"in {args.out}")
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="the run's directory")
    parser.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                        help="latest (checkpoints/, the default) or best (best_checkpoints/ of ModelCheckpoint)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", allow_abbrev=False, help="train a model (the embedded default without --config)",
                           epilog="Override any config key with --config.KEY=VALUE, e.g. --config.epochs=3.")
    train.add_argument("--config", help="experiment file, experiments/X.py[:arg] (default: the digits CNN)")
    train.add_argument("--workdir", help="run directory (default: runs/<experiment>/<timestamp>); "
                                         "an existing run resumes from its latest checkpoint")
    train.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="list the registered models")
    models.set_defaults(func=cmd_models, models_command=None)
    models_sub = models.add_subparsers(dest="models_command")
    summary = models_sub.add_parser("summary", help="layer table, weight counts and forward FLOPs of a model")
    summary.add_argument("name", help="a name from `jaxcnn models`")
    summary.add_argument("--input", help="input shape HxWxC (default: the model's own, e.g. 224x224x3)")
    summary.add_argument("--classes", type=int, help="number of classes (default: the model's own, e.g. 1000)")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser("prepare", help="build a TFDS dataset offline from raw files")
    prep.add_argument("name", help="mnist, cifar10, or folder (any class-per-folder image tree)")
    prep.add_argument("--source", required=True, help="folder with the raw files (cifar10: or its archive)")
    prep.add_argument("--data_dir", help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    prep.add_argument("--overwrite", action="store_true", help="rebuild an already prepared dataset")
    prep.add_argument("--name", dest="dataset_name", help="folder: the dataset's name (default: the source folder's)")
    prep.add_argument("--skip_corrupt", action="store_true",
                      help="folder: skip (and count) corrupt or unreadable images instead of stopping")
    prep.add_argument("--resize", help="folder: resize every image to HEIGHTxWIDTH (needed when sizes differ)")
    prep.add_argument("--test_fraction", type=float,
                      help="folder without train/ and test/ folders: share held out as test (default 0.2)")
    prep.set_defaults(func=cmd_data_prepare)

    evaluate = sub.add_parser("evaluate", allow_abbrev=False, help="evaluate a trained run on a split",
                              description="Writes eval/<split>.json, eval/<split>_predictions.npz and the "
                                          "confusion matrix, ROC and misclassified plots in plots/.")
    _add_run_arguments(evaluate)
    evaluate.add_argument("--split", default="test", choices=("train", "validation", "test"))
    evaluate.add_argument("--data_dir", help="TFDS data_dir of the dataset, when it moved since training")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", allow_abbrev=False, help="classify image files with a trained run",
                             description="Any format and size; each image is prepared as the training data was.")
    _add_run_arguments(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top_k", type=int, help="classes to show per image (default: min(5, classes))")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.set_defaults(func=cmd_predict)

    visualize = sub.add_parser("visualize", allow_abbrev=False, help="plot a run: curves, filters, feature maps",
                               description="Without --layer: the training curves and the first convolution's "
                                           "filters. With --layer NAME IMAGE...: that layer's feature maps.")
    _add_run_arguments(visualize)
    visualize.add_argument("--layer", help="a layer that sows feature maps, e.g. conv1")
    visualize.add_argument("images", nargs="*", metavar="IMAGE")
    visualize.set_defaults(func=cmd_visualize)

    convert = sub.add_parser("convert", allow_abbrev=False, help="import Keras or PyTorch weights as a workdir",
                             description="Writes a workdir (config.json, dataset.json, an Orbax checkpoint) that "
                                         "evaluate, predict and train (init_from=DIR) use.")
    convert.add_argument("--from", dest="source", required=True, choices=("keras", "torch"))
    convert.add_argument("--arch", required=True, help="a model of `jaxcnn models` with a layout for the source")
    convert.add_argument("--weights", required=True, help="Keras .h5/.keras file, or PyTorch state dict file")
    convert.add_argument("--out", required=True, help="the new workdir")
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except UserError as e:
        print(f"jaxcnn: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk outside checkpoints (logs, plots): one line too
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        print(f"jaxcnn: error: cannot write {e.filename or 'a file'}: {e.strerror}; free space on that disk, then "
              "run the same command again (a run resumes from its latest checkpoint)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
