"""
An annotator panel: instance-dependent noise
============================================

A vision-language model's mistakes depend on the image: a blurry 3 may be
read as an 8 by several prompt templates at once. :class:`~sklearn_npll.AnnotatorPanel`
imitates this with a panel of weak few-shot classifiers, each seeing a few
labelled examples and a random subset of the pixels; the union of their votes
is each image's candidate set. Co-Reg, PRODEN and CC then learn from the sets
alone.

.. note::
   Tiny settings (digits as 64-pixel feature vectors, 30 epochs) so that the
   example runs at every build of this site; real settings need more epochs.
"""

# %%
# The panel and its candidate sets
# --------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_npll import (CCClassifier, CoRegClassifier, PRODENClassifier,
                          make_annotator_partial_labels)

torch.set_num_threads(1)
digits = load_digits()
X_all = (digits.data / 16).astype(np.float32)
X_rest, X_test, y_rest, y_test = train_test_split(
    X_all, digits.target, test_size=400, stratify=digits.target, random_state=0)
# the annotators learn from a small labelled pool, disjoint from the training set
X, X_pool, y, y_pool = train_test_split(X_rest, y_rest, train_size=900,
                                        stratify=y_rest, random_state=0)
Y, stats, panel = make_annotator_partial_labels(
    X, y, X_pool, y_pool, n_annotators=3, n_shots=5, feature_fraction=0.3,
    random_state=0)
print(f"mean set size {stats['mean_size']:.2f}, "
      f"true class missing from {stats['noise_rate']:.0%} of the sets")
print("votes of the three annotators on the first five images:\n", panel.votes(X[:5]))

# %%
# Where the noise falls
# ---------------------
# The noise is not uniform: per true class, the fraction of sets that hold
# it (the coverage) and the mean set size differ a lot.
classes = np.arange(10)
coverage = [Y[y == c, c].mean() for c in classes]
size = [Y[y == c].sum(1).mean() for c in classes]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.bar(classes, coverage, color="tab:blue", label="coverage (true class in the set)")
ax.set(xlabel="true class", ylabel="coverage", ylim=(0, 1), xticks=classes)
ax2 = ax.twinx()
ax2.plot(classes, size, "o-", color="tab:orange", label="mean set size")
ax2.set(ylabel="mean set size", ylim=(0, max(size) + 1))
fig.legend(loc="lower right")
plt.show()

# %%
# Three learners on the same sets
# -------------------------------
common = dict(max_epochs=30, batch_size=64, random_state=0)
models = {
    "CC": CCClassifier(**common),
    "PRODEN": PRODENClassifier(**common),
    "Co-Reg": CoRegClassifier(warmup_epochs=10, start_contrastive=2, queue_size=1024,
                              **common),
}
accuracy = {"panel majority vote": np.mean(panel.predict(X_test) == y_test)}
for name, model in models.items():
    accuracy[name] = model.fit(X, Y).score(X_test, y_test)
    print(f"{name:>8}: test accuracy {accuracy[name]:.3f}")
print(f"panel majority vote: {accuracy['panel majority vote']:.3f}")

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(accuracy), list(accuracy.values()), color="tab:green")
for i, value in enumerate(accuracy.values()):
    ax.text(value + 0.01, i, f"{value:.2f}", va="center")
ax.set(xlabel="test accuracy", xlim=(0, 1.1))
plt.show()
