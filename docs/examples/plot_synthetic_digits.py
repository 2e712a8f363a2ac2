"""
Synthetic noisy partial labels on digits
========================================

Co-Reg against the classifier-consistent loss (CC) on scikit-learn's bundled
8x8 digits, with candidate sets made by the paper's synthetic protocol: every
wrong class joins a set with probability ``q``, then with probability ``eta``
the true class is swapped out of it. No true label is used for training; the
test labels only draw the curves.

.. note::
   To run in seconds at every build of this site, the example uses 900
   digits as 64-pixel feature vectors (an MLP encoder) and 30 epochs. Real
   settings need more data and epochs (the reference trains 100 to 800).
"""

# %%
# Candidate sets
# --------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from skorch.callbacks import Callback
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_npll import CCClassifier, CoRegClassifier, candidate_stats, make_partial_labels

torch.set_num_threads(1)  # small networks: one thread is fastest
digits = load_digits()
X_all = (digits.data / 16).astype(np.float32)
X, X_test, y, y_test = train_test_split(X_all, digits.target, train_size=900,
                                        test_size=400, stratify=digits.target,
                                        random_state=0)
Y = make_partial_labels(y, partial_rate=0.1, noise_rate=0.3, random_state=0)
stats = candidate_stats(Y, y)
print(f"mean set size {stats['mean_size']:.2f}, "
      f"true class missing from {stats['noise_rate']:.0%} of the sets")


# %%
# Train, and follow test accuracy epoch by epoch
# ----------------------------------------------
# A skorch callback records the test accuracy in the estimator's ``history_``
# at the end of every epoch.
class TestAccuracy(Callback):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def on_epoch_end(self, net, **kwargs):
        net.history.record("test_accuracy", net.score(self.X, self.y))


common = dict(max_epochs=30, batch_size=64, random_state=0,
              callbacks=[("test", TestAccuracy(X_test, y_test))])
coreg = CoRegClassifier(warmup_epochs=10, start_contrastive=2, queue_size=1024,
                        **common).fit(X, Y)
cc = CCClassifier(**common).fit(X, Y)
print(f"test accuracy: Co-Reg {coreg.score(X_test, y_test):.3f}, "
      f"CC {cc.score(X_test, y_test):.3f}")

# %%
# Accuracy curves and the trusted splits
# --------------------------------------
# After warm-up, each network divides the training set every epoch into a
# trusted partial-label split and an unlabeled split. The right panel shows
# the sizes of both networks' trusted splits next to the number of sets that
# really hold the true class.
epochs = np.arange(1, 31)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.plot(epochs, coreg.history_[:, "test_accuracy"], label="Co-Reg")
ax1.plot(epochs, cc.history_[:, "test_accuracy"], label="CC")
ax1.axvline(coreg.warmup_epochs + 0.5, color="grey", ls=":", label="end of warm-up")
ax1.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
ax1.legend()
n_clean = int(round(len(Y) * (1 - stats["noise_rate"])))
ax2.plot(epochs, coreg.history_[:, "n_trusted_a"], label="trusted by A")
ax2.plot(epochs, coreg.history_[:, "n_trusted_b"], label="trusted by B")
ax2.axhline(n_clean, color="k", ls="--", label="sets holding the true class")
ax2.set(xlabel="epoch", ylabel="samples", ylim=(0, len(Y)))
ax2.legend()
plt.show()
