"""The `jaxcnn` command.

    jaxcnn train [--config experiments/X.py[:arg]] [--workdir DIR] [--config.key=value ...]
    jaxcnn models
    jaxcnn models summary NAME [--input HxWxC] [--classes N]
    jaxcnn data prepare NAME --source DIR [--data_dir DIR] [--overwrite]

Bad input ends with one line on stderr naming the problem and its fix, exit code 2.
"""

from __future__ import annotations

import argparse
import datetime
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
    path, built = prepare.prepare(args.name, args.source, args.data_dir, overwrite=args.overwrite)
    print(f"prepared {args.name} in {path}" if built else
          f"{args.name} is already prepared in {path} (--overwrite rebuilds it)")
    return 0


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
    prep.add_argument("name", help="dataset name, e.g. mnist")
    prep.add_argument("--source", required=True, help="folder with the raw files")
    prep.add_argument("--data_dir", help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    prep.add_argument("--overwrite", action="store_true", help="rebuild an already prepared dataset")
    prep.set_defaults(func=cmd_data_prepare)
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
    except KeyboardInterrupt:
        print("jaxcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
