"""The course's CNN on MNIST in jaxcnn, timed to a test accuracy: the jaxcnn side of the
README's time-to-accuracy comparison (tools/keras_mnist_course.py is the Keras side).

    jaxcnn data prepare mnist --source ../shared/data/mnist --data_dir ~/tensorflow_datasets   # once
    python tools/jaxcnn_mnist_course.py --data_dir ~/tensorflow_datasets --target 0.99

The same run as the Keras script: simple_cnn (Conv2D 32 3x3 relu -> MaxPool 2x2 -> Flatten ->
Dense 128 relu -> Dense 10 softmax), Adam 1e-3, cross-entropy, batch 128, all 60,000 training
images, pixels / 255. After each epoch a callback evaluates the test set and stops the run at
the first epoch whose test accuracy reaches `--target`; it prints the wall-clock seconds from
the command's start (imports and data loading included) as one JSON line.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="", help="TFDS data_dir holding the prepared mnist")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
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

    config = config_lib.get_config()
    config.model, config.dataset, config.data_dir = "simple_cnn", "mnist", args.data_dir
    config.validation_split = 0.0
    config.batch_size, config.epochs = args.batch, args.epochs
    config.optimizer, config.learning_rate = "adam", 1e-3
    config.verbose = 0
    config.callbacks.tensorboard.enabled = False
    stop = StopAtTestAccuracy()
    with tempfile.TemporaryDirectory() as workdir:
        fit(config, workdir, callbacks=[stop])
    reached = bool(stop.history) and stop.history[-1] >= args.target
    print(json.dumps({"framework": "jaxcnn", "jaxcnn": jaxcnn.__version__, "target": args.target,
                      "reached": reached, "epochs": len(stop.history), "test_accuracy": stop.history,
                      "seconds": round(time.perf_counter() - START, 1)}))


if __name__ == "__main__":
    main()
