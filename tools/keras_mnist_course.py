"""The course's Keras CNN on MNIST, as the course writes it, timed to a test accuracy:
the Keras side of the README's time-to-accuracy comparison.

    python tools/keras_mnist_course.py --data ../shared/data/mnist --target 0.99
    python tools/keras_mnist_course.py --data ../shared/data/mnist --recipe augmented

`--recipe course`: Conv2D(32, (3, 3), relu) -> MaxPooling2D((2, 2)) -> Flatten -> Dense(128,
relu) -> Dense(10, softmax); Adam, sparse categorical cross-entropy, batch 128, pixels / 255.
`--recipe augmented`, jaxcnn's experiments/mnist_cnn.py in Keras: RandomRotation(8 degrees),
RandomZoom(8%) and RandomTranslation(8%) layers (training only, zeros outside) before the
same model with Dropout(0.25) before each Dense layer; batch 64, Adam 1e-3 with CosineDecay
over `--epochs`. Both train on all 60,000 training images. After each epoch it evaluates
the test set; it stops at the first epoch whose test accuracy reaches `--target` and prints
the wall-clock seconds from the command's start (imports and data loading included) as one
JSON line. TensorFlow backend, as the course.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def read_idx(path: str) -> np.ndarray:
    """An IDX file of the official MNIST distribution (gzip-compressed)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/mnist", help="folder of the four IDX .gz files")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", choices=["course", "augmented"], default="course")
    parser.add_argument("--epochs", type=int, help="default: 20 (course), 15 (augmented)")
    parser.add_argument("--batch", type=int, help="default: 128 (course), 64 (augmented)")
    args = parser.parse_args()
    augmented = args.recipe == "augmented"
    epochs = args.epochs or (15 if augmented else 20)
    batch = args.batch or (64 if augmented else 128)

    import keras
    from keras import layers
    keras.utils.set_random_seed(args.seed)  # weights, dropout, augmentation and shuffling

    x_train = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))[..., None] / 255.0
    y_train = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    x_test = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"))[..., None] / 255.0
    y_test = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"))

    def dropout():
        return [layers.Dropout(0.25)] if augmented else []

    warp = [layers.RandomRotation(8 / 360, fill_mode="constant"), layers.RandomZoom(0.08, fill_mode="constant"),
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant")] if augmented else []
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        *warp,
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        *dropout(),
        layers.Dense(128, activation="relu"),
        *dropout(),
        layers.Dense(10, activation="softmax"),
    ])
    steps = epochs * -(-len(x_train) // batch)
    optimizer = (keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)) if augmented
                 else "adam")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = []
    for epoch in range(1, epochs + 1):
        model.fit(x_train, y_train, batch_size=batch, epochs=1, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        history.append(round(float(accuracy), 4))
        if accuracy >= args.target:
            break
    reached = history[-1] >= args.target
    print(json.dumps({"framework": "keras", "keras": keras.__version__, "recipe": args.recipe,
                      "seed": args.seed, "target": args.target, "reached": reached, "epochs": len(history),
                      "test_accuracy": history, "seconds": round(time.perf_counter() - START, 1)}))


if __name__ == "__main__":
    main()
