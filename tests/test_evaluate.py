"""`jaxcnn.evaluate.report` against scikit-learn's own functions on the same predictions,
random and edge cases (classes never predicted, classes absent, a single-class batch, binary)."""

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics
from sklearn.preprocessing import label_binarize

from jaxcnn.errors import UserError
from jaxcnn.evaluate import auc_roc, classification_report, report


def random_predictions(n, c, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c) * 0.5, size=n).astype(np.float32)
    labels = rng.integers(0, c, n)
    return labels, probs


def names(c):
    return [f"class_{i}" for i in range(c)]


def assert_matches_sklearn(labels, probs, class_names):
    """Every field of the report equals scikit-learn's value computed here independently."""
    c = len(class_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report must not trip scikit-learn's undefined-metric warnings
        got = report(labels, probs, class_names)
    predicted = np.argmax(probs, axis=1)
    assert got["num_examples"] == len(labels) and got["class_names"] == class_names
    assert got["accuracy"] == metrics.accuracy_score(labels, predicted)
    if c > 5:
        assert got["top5_accuracy"] == metrics.top_k_accuracy_score(labels, probs, k=5, labels=range(c))
    else:
        assert "top5_accuracy" not in got
    assert got["loss"] == pytest.approx(metrics.log_loss(labels, probs, labels=range(c)), rel=1e-12)
    np.testing.assert_array_equal(got["confusion_matrix"], metrics.confusion_matrix(labels, predicted, labels=range(c)))
    oracle = metrics.classification_report(labels, predicted, labels=range(c), target_names=class_names,
                                           output_dict=True, zero_division=0)
    for name in class_names:
        expected = oracle[name]
        assert got["per_class"][name] == {"precision": expected["precision"], "recall": expected["recall"],
                                          "f1": expected["f1-score"], "support": expected["support"]}
    for key, oracle_key in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        expected = oracle[oracle_key]
        assert got[key] == pytest.approx({"precision": expected["precision"], "recall": expected["recall"],
                                          "f1": expected["f1-score"]}, rel=1e-12, abs=0)
    json.dumps(got, allow_nan=False)  # plain JSON: no NaN, no numpy types
    return got


@pytest.mark.parametrize("n,c,seed", [(300, 10, 0), (57, 7, 1), (40, 3, 2), (1000, 12, 3)])
def test_random_multiclass_predictions_equal_sklearn(n, c, seed):
    labels, probs = random_predictions(n, c, seed)
    got = assert_matches_sklearn(labels, probs, names(c))
    auc = got["auc_roc"]
    assert auc["macro"] == pytest.approx(metrics.roc_auc_score(labels, probs, multi_class="ovr", average="macro",
                                                               labels=range(c)), rel=1e-12)
    assert auc["micro"] == pytest.approx(metrics.roc_auc_score(labels, probs, multi_class="ovr", average="micro",
                                                               labels=range(c)), rel=1e-12)
    per_class = metrics.roc_auc_score(label_binarize(labels, classes=range(c)), probs, average=None)
    assert [auc["per_class"][name] for name in names(c)] == pytest.approx(per_class, rel=1e-12)


def test_classes_never_predicted_have_zero_precision_as_sklearn():
    labels, probs = random_predictions(200, 6, seed=4)
    probs[:, [2, 5]] = 0.0  # classes 2 and 5 are never the argmax
    probs /= probs.sum(axis=1, keepdims=True)
    got = assert_matches_sklearn(labels, probs, names(6))
    assert got["per_class"]["class_2"]["precision"] == 0.0 and got["per_class"]["class_5"]["f1"] == 0.0
    assert got["per_class"]["class_2"]["support"] == np.sum(labels == 2) > 0
    assert np.asarray(got["confusion_matrix"])[:, [2, 5]].sum() == 0


def test_a_class_neither_in_the_labels_nor_predicted_still_has_its_row():
    labels, probs = random_predictions(120, 5, seed=9)
    labels[labels == 4] = 1
    probs[:, 4] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    got = assert_matches_sklearn(labels, probs, names(5))
    assert got["per_class"]["class_4"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.asarray(got["confusion_matrix"]).shape == (5, 5) and got["auc_roc"]["per_class"]["class_4"] is None


def test_a_class_absent_from_the_labels():
    labels, probs = random_predictions(150, 5, seed=5)
    labels[labels == 3] = 0  # class 3 never occurs
    got = assert_matches_sklearn(labels, probs, names(5))
    auc = got["auc_roc"]
    assert auc["per_class"]["class_3"] is None  # undefined: no positives
    present = [k for k in range(5) if k != 3]
    assert auc["macro"] == pytest.approx(np.mean([metrics.roc_auc_score(labels == k, probs[:, k]) for k in present]),
                                         rel=1e-12)
    assert auc["micro"] == pytest.approx(metrics.roc_auc_score(labels, probs, multi_class="ovr", average="micro",
                                                               labels=range(5)), rel=1e-12)


def test_a_single_class_batch():
    _, probs = random_predictions(25, 8, seed=6)
    labels = np.full(25, 4)
    got = assert_matches_sklearn(labels, probs, names(8))
    auc = got["auc_roc"]
    assert all(v is None for v in auc["per_class"].values()) and auc["macro"] is None
    assert auc["micro"] == pytest.approx(metrics.roc_auc_score(labels, probs, multi_class="ovr", average="micro",
                                                               labels=range(8)), rel=1e-12)
    assert got["per_class"]["class_4"]["support"] == 25 and got["weighted_avg"]["recall"] == got["accuracy"]


def test_binary_predictions_report_one_auc():
    rng = np.random.default_rng(7)
    p = rng.random(120)
    labels = (rng.random(120) < p).astype(int)  # informative scores
    probs = np.stack([1 - p, p], axis=1)
    got = assert_matches_sklearn(labels, probs, ["cat", "dog"])
    assert got["auc_roc"] == pytest.approx(metrics.roc_auc_score(labels, p), rel=1e-12)
    assert got["auc_roc"] > 0.6
    assert auc_roc(np.ones(10, int), probs[:10], ["cat", "dog"]) is None  # one class only: undefined


def test_binary_single_class_batch():
    probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    got = assert_matches_sklearn(np.zeros(3, int), probs, ["neg", "pos"])
    assert got["auc_roc"] is None
    assert got["accuracy"] == pytest.approx(2 / 3)  # a tie at 0.5 predicts the first class, as the sigmoid head


def test_a_given_loss_is_reported_as_is():
    labels, probs = random_predictions(30, 4)
    assert report(labels, probs, names(4), loss=0.125)["loss"] == 0.125


def test_the_text_report_is_sklearns():
    labels, probs = random_predictions(80, 4, seed=8)
    text = classification_report(labels, probs, names(4))
    assert text == metrics.classification_report(labels, probs.argmax(1), target_names=names(4), digits=4,
                                                  zero_division=0)


@pytest.mark.parametrize("labels,probs,class_names,message", [
    ([0, 1], np.full((3, 2), 0.5), ["a", "b"], "labels (N,) and probs (N, classes)"),
    ([0, 1], np.full((2, 3), 1 / 3), ["a", "b"], "3 columns for 2 class names"),
    ([0, 2], np.full((2, 2), 0.5), ["a", "b"], "class indices in [0, 2)"),
    ([0.0, 1.0], np.full((2, 2), 0.5), ["a", "b"], "class indices"),
    ([0, 1], np.full((2, 2), 0.5), ["a", "a"], "class names repeat"),
    ([], np.zeros((0, 2)), ["a", "b"], "N > 0"),
])
def test_bad_predictions_are_one_line_user_errors(labels, probs, class_names, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        report(np.asarray(labels), probs, class_names)
    assert "\n" not in str(e.value)
