"""Keras-style callbacks for `fit` (the public name; they live in `jaxcnn.train.callbacks`).

    from jaxcnn import callbacks
    trainer.fit(workdir, callbacks=[callbacks.EarlyStopping(patience=3, restore_best_weights=True),
                                    callbacks.ReduceLROnPlateau(factor=0.5, patience=2)])

Each is also enabled from the config: `--config.callbacks.early_stopping.enabled=true` (see
`jaxcnn/config.py`).
"""

from jaxcnn.train.callbacks import (  # noqa: F401
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LazyLogs,
    LearningRateScheduler,
    MetricsLogger,
    ModelCheckpoint,
    MonitorCallback,
    ProgbarLogger,
    ReduceLROnPlateau,
    TensorBoard,
    TerminateOnNaN,
)

__all__ = ["Callback", "CallbackList", "CSVLogger", "EarlyStopping", "History", "LazyLogs", "LearningRateScheduler",
           "MetricsLogger", "ModelCheckpoint", "MonitorCallback", "ProgbarLogger", "ReduceLROnPlateau", "TensorBoard",
           "TerminateOnNaN"]
