"""The classifier's model card (``python -m playground evaluate classifier``)."""
from __future__ import annotations

from pathlib import Path

from ..core.checkpoint import write_json
from ..core.modelcard import write_card
from ..data import mnist
from .classifier import accuracy, load_classifier


def evaluate_classifier_and_card(checkpoints: Path) -> dict:
    folder = checkpoints / "classifier"
    clf = load_classifier(folder)
    test = mnist.digits("test")
    metrics = {"test_accuracy": accuracy(clf, test.x, test.y), "test_digits": len(test)}
    write_json(folder / "metrics.json", metrics)
    write_card(folder, title="`classifier` — the held-out digit classifier used by `evaluate`",
               summary="A small CNN (4 conv layers, 128-d feature layer). Its features feed the Fréchet "
                       "distance of every digit generator, its predictions the class histograms.",
               command="python -m playground train classifier && python -m playground evaluate classifier",
               data="The 3,600 training digits (augmented), 400 validation digits for model selection; "
                    "accuracy measured on the 1,000 test digits (see `playground/data/mnist.py`).")
    return metrics
