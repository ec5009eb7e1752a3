"""The epoch timer both benchmark processes use (Keras 3 here, tf-keras in DeepCTR's).

It imports no Keras: each process mixes it into its own Keras' ``Callback`` class, so the
two libraries are timed by literally the same code.
"""
import time


class ThroughputTimer:
    """Times the last epoch after its first `warmup_steps` steps (tracing, input warm-up).

    Mix into a Keras ``Callback``: ``class Throughput(ThroughputTimer, keras.callbacks.Callback)``.
    After training, ``epoch_seconds`` holds every epoch's duration and ``timed_seconds`` the
    timed part of the last epoch.
    """

    def __init__(self, epochs: int, warmup_steps: int):
        super().__init__()
        self.last_epoch = epochs - 1
        self.warmup_steps = warmup_steps
        self.epoch_seconds = []
        self.timed_seconds = None
        self.timed_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_start = time.perf_counter()
        if epoch == self.last_epoch and self.warmup_steps == 0:
            self.timed_start = self.epoch_start

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.last_epoch and batch == self.warmup_steps - 1:
            self.timed_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.epoch_seconds.append(now - self.epoch_start)
        if epoch == self.last_epoch and self.timed_start is not None:
            self.timed_seconds = now - self.timed_start
