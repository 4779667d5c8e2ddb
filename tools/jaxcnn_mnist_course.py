"""The course's CNN on MNIST in jaxcnn, timed to a test accuracy: the jaxcnn side of the
README's time-to-accuracy comparison (tools/keras_mnist_course.py is the Keras side).

    jaxcnn data prepare mnist --source ../shared/data/mnist --data_dir ~/tensorflow_datasets   # once
    python tools/jaxcnn_mnist_course.py --data_dir ~/tensorflow_datasets --target 0.99
    python tools/jaxcnn_mnist_course.py --data_dir ~/tensorflow_datasets --recipe augmented

The same run as the Keras script. `--recipe course`: simple_cnn (Conv2D 32 3x3 relu -> MaxPool
2x2 -> Flatten -> Dense 128 relu -> Dense 10 softmax), Adam 1e-3, cross-entropy, batch 128,
pixels / 255. `--recipe augmented`: experiments/mnist_cnn.py's config (the same model with
dropout 0.25 before each Dense layer, batch 64, Adam 1e-3 with cosine decay over `--epochs`,
random rotation 8 degrees, zoom 8%, shift 8%). Both train on all 60,000 training images.
After each epoch a callback evaluates the test set and stops the run at the first epoch whose
test accuracy reaches `--target`; it prints the wall-clock seconds from the command's start
(imports and data loading included) as one JSON line.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="", help="TFDS data_dir holding the prepared mnist")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", choices=["course", "augmented"], default="course")
    parser.add_argument("--epochs", type=int, help="default: 20 (course), 15 (augmented)")
    parser.add_argument("--batch", type=int, help="default: 128 (course), 64 (augmented)")
    args = parser.parse_args()

    import jaxcnn
    from jaxcnn import callbacks, config as config_lib
    from jaxcnn.train import fit

    class StopAtTestAccuracy(callbacks.Callback):
        def __init__(self):
            self.history = []

        def on_epoch_end(self, epoch, logs=None):
            accuracy = self.trainer.evaluate(self.trainer.test_data)["accuracy"]
            self.history.append(round(float(accuracy), 4))
            if accuracy >= args.target:
                self.trainer.stop_training = True

    if args.recipe == "augmented":
        config = config_lib.load(os.path.join(REPO, "experiments", "mnist_cnn.py"))
    else:
        config = config_lib.get_config()
        config.model, config.dataset, config.batch_size, config.epochs = "simple_cnn", "mnist", 128, 20
        config.optimizer, config.learning_rate = "adam", 1e-3
    config.data_dir, config.validation_split, config.seed = args.data_dir, 0.0, args.seed
    config.batch_size, config.epochs = args.batch or config.batch_size, args.epochs or config.epochs
    config.verbose = 0
    config.callbacks.tensorboard.enabled = False
    stop = StopAtTestAccuracy()
    with tempfile.TemporaryDirectory() as workdir:
        fit(config, workdir, callbacks=[stop])
    reached = bool(stop.history) and stop.history[-1] >= args.target
    print(json.dumps({"framework": "jaxcnn", "jaxcnn": jaxcnn.__version__, "recipe": args.recipe,
                      "seed": args.seed, "target": args.target, "reached": reached, "epochs": len(stop.history),
                      "test_accuracy": stop.history, "seconds": round(time.perf_counter() - START, 1)}))


if __name__ == "__main__":
    main()
