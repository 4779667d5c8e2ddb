"""Input-pipeline throughput on CIFAR-10: how fast augmented batches are fed, and how much
of a train step goes to making them.

    python tools/bench_data.py --data_dir ~/tensorflow_datasets     # CIFAR-10 prepared there
    python tools/bench_data.py --synthetic                           # random pixels, CIFAR-10's shape
    python tools/bench_data.py --data_dir DIR --stream               # also the tf.data streaming path

Reports, for batches of `--batch` with random crop (4-pixel padding) and horizontal flip:

- feed rate: images/s of the in-memory pipeline alone (gather, scale, crop, flip, all
  jitted on device), the median of `--epochs` full epochs over the 45,000 training images,
  and the same without augmentation;
- train step: ms per step of the full loop step (jitted train step and metric merge) on
  batches made in advance, and fed by the pipeline as `Trainer.fit` does; the share of
  the fed step spent on data is 1 - alone / fed (the pipeline runs on the same cores),
  and, less noisy when it is small, (ms per batch of the feed) / (that + ms per step);
- with `--stream`: images/s of the streamed path (tf.data reading and decoding the PNG
  records, then the same device function), one epoch.
"""

import argparse
import statistics
import time

import jax
import numpy as np

import benchlib


def rate(fn, images: int) -> float:
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def drain(batches) -> None:
    last = None
    for last in batches:
        pass
    jax.block_until_ready(last)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="TFDS data_dir holding the prepared cifar10")
    source.add_argument("--synthetic", action="store_true", help="random uint8 images of CIFAR-10's shape")
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of the feed-rate measurement")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed train-step window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--stream", action="store_true", help="also time the tf.data streaming path")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    from jaxcnn import config as config_lib
    from jaxcnn import data as data_lib
    from jaxcnn.data import Dataset, Split, pipeline
    from jaxcnn.data.augment import Augment
    from jaxcnn.train import Trainer, steps

    overrides = {"model": args.model, "batch_size": str(args.batch), "verbose": "0",
                 "augment.crop_padding": "4", "augment.flip": "true"}
    if args.synthetic:
        rng = np.random.default_rng(0)
        train = Split(rng.integers(0, 256, (45000, 32, 32, 3), np.uint8), rng.integers(0, 10, 45000).astype(np.int32))
        dataset = Dataset("synthetic", train, None, Split(train.images[:1000], train.labels[:1000]),
                          [str(i) for i in range(10)], 255.0)
        config = config_lib.apply_overrides(config_lib.get_config(), overrides)
    else:
        config = config_lib.apply_overrides(config_lib.get_config(),
                                            {**overrides, "dataset": "cifar10", "data_dir": args.data_dir})
        dataset = data_lib.load(config)  # 45,000 / 5,000 / 10,000
    trainer = Trainer(config, dataset=dataset)
    split, key = trainer.train_data, trainer.shuffle_rng
    n = split.num_batches * split.batch_size
    plain = pipeline.DeviceSplit(dataset.train, trainer.mesh, args.batch, preprocess=dataset.preprocess)

    result = {"images": len(dataset.train), "batch": args.batch, "augment": "crop 4 + flip"}
    for name, pipe in (("feed", split), ("feed_no_augment", plain)):
        drain(pipe.batches(key, 0))  # compile
        rates = [rate(lambda e=e: drain(pipe.batches(key, e)), n) for e in range(1, args.epochs + 1)]
        result[f"{name}_images_per_s"] = round(statistics.median(rates))
        result[f"{name}_windows"] = [round(r) for r in rates]

    ready = list(split.batches(key, 0))[: args.steps]
    state = trainer.state

    def train(batches):
        nonlocal state
        running, in_flight = steps.Metrics.empty(), steps.InFlight()
        for batch in batches:
            state, m = trainer._train_step(state, batch, trainer.dropout_rng)
            running = steps.merge(running, in_flight.add(m))
        jax.block_until_ready((state.params, running))

    def fed(epoch):
        batches = split.batches(key, epoch)
        return (next(batches) for _ in range(args.steps))

    train(ready[:2])  # compile
    train(fed(0))
    alone, with_data = [], []
    for w in range(args.windows):  # interleaved, so both see the same machine load
        alone.append(rate(lambda: train(ready), args.steps))
        with_data.append(rate(lambda w=w: train(fed(w + 1)), args.steps))
    ms_alone = 1000 / statistics.median(alone)
    ms_fed = 1000 / statistics.median(with_data)
    ms_data = 1000 * args.batch / result["feed_images_per_s"]
    result.update({
        "model": args.model, "step_ms_prepared_batches": round(ms_alone, 2), "step_ms_fed_by_pipeline": round(ms_fed, 2),
        "data_share_of_step": round(max(0.0, 1 - ms_alone / ms_fed), 3),
        # The same share from the feed rate: below the timing noise of the difference above.
        "data_ms_per_batch": round(ms_data, 3), "data_share_from_feed_rate": round(ms_data / (ms_alone + ms_data), 4),
        "train_images_per_s_fed": round(args.batch * statistics.median(with_data)),
        "step_ms_windows_prepared": [round(1000 / r, 1) for r in alone],
        "step_ms_windows_fed": [round(1000 / r, 1) for r in with_data],
    })

    if args.stream:
        from jaxcnn.data import sources
        streamed = sources.load_tfds("cifar10", data_dir=args.data_dir, in_memory_limit_mb=0, validation_split=0.1)
        stream = pipeline.make_split(streamed.train, trainer.mesh, args.batch, dataset.preprocess,
                                     Augment(crop_padding=4, flip=True))
        drain(stream.batches(key, 0))  # warms tf.data and the compile
        result["stream_images_per_s"] = round(rate(lambda: drain(stream.batches(key, 1)), len(streamed.train)))

    benchlib.report(result, args.out)


if __name__ == "__main__":
    main()
