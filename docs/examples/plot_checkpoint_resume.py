"""
Checkpoints and resuming a fit
==============================

Long Co-Reg runs (hundreds of epochs) should survive an interruption.
:class:`~sklearn_npll.callbacks.TrainingCheckpoint` writes everything a
resumed fit needs at the end of every epoch: both networks (with their
momentum encoders, queues and prediction memories), Co-Reg's shared state
(prototypes, division loss histories), both optimizers and the history.
Given to skorch's ``LoadInitState``, the same callback restores it all at the
start of the next ``fit``, which then continues the schedule from the last
saved epoch up to ``max_epochs``. With the same ``random_state``, the
resumed fit takes the same steps as one that was never interrupted (the
random generator states are in the checkpoint too).

.. note::
   Tiny settings (500 digits as feature vectors, 12 epochs) so that the
   example runs at every build; real runs have far more epochs.
"""

import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from skorch.callbacks import LoadInitState
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_npll import CoRegClassifier, make_partial_labels
from sklearn_npll.callbacks import TrainingCheckpoint

torch.set_num_threads(1)
digits = load_digits()
X_all = (digits.data / 16).astype(np.float32)
X, X_test, y, y_test = train_test_split(X_all, digits.target, train_size=500,
                                        test_size=400, stratify=digits.target,
                                        random_state=0)
Y = make_partial_labels(y, partial_rate=0.1, noise_rate=0.2, random_state=0)
params = dict(warmup_epochs=4, start_contrastive=1, batch_size=64, queue_size=512,
              random_state=0)

# %%
# A 12-epoch run that stops after 6 epochs (as if the machine went down: a
# callback interrupts it), then a new estimator that picks it up from the
# checkpoint folder.
from skorch.callbacks import Callback


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epochs:
            raise KeyboardInterrupt


folder = tempfile.mkdtemp()
checkpoint = TrainingCheckpoint(dirname=folder)
first = CoRegClassifier(max_epochs=12, callbacks=[
    ("checkpoint", checkpoint), ("crash", StopAfter(6))], **params)
first.fit(X, Y)
print("epochs before the interruption:", len(first.history_))

resumed = CoRegClassifier(max_epochs=12, callbacks=[
    ("checkpoint", checkpoint), ("resume", LoadInitState(checkpoint))], **params)
resumed.fit(X, Y)
print("epochs in the resumed history:", len(resumed.history_))

# %%
# The same 12 epochs without interruption, for comparison.
straight = CoRegClassifier(max_epochs=12, **params).fit(X, Y)
print(f"test accuracy: resumed {resumed.score(X_test, y_test):.3f}, "
      f"uninterrupted {straight.score(X_test, y_test):.3f}")
agree = np.mean(resumed.predict(X_test) == straight.predict(X_test))
print(f"the two agree on {agree:.1%} of the test predictions")

fig, ax = plt.subplots(figsize=(6, 3.5))
epochs = np.arange(1, 13)
ax.plot(epochs, straight.history_[:, "train_loss"], "o-", label="uninterrupted")
ax.plot(epochs, resumed.history_[:, "train_loss"], "x--", ms=9,
        label="stopped after 6, resumed")
ax.axvline(6.5, color="grey", ls=":")
ax.set(xlabel="epoch", ylabel="training loss")
ax.legend()
plt.show()

# %%
import shutil

shutil.rmtree(folder)
