"""Training: the train state, pure steps, the fit loop, callbacks and checkpoints."""

from jaxcnn.train.callbacks import Callback, History
from jaxcnn.train.loop import Trainer, fit
from jaxcnn.train.state import TrainState

__all__ = ["Callback", "History", "Trainer", "TrainState", "fit"]
