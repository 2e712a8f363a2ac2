"""
Label-free model selection with the covering rate
=================================================

Without true labels, how do you choose hyperparameters? The covering rate
(:func:`~sklearn_npll.covering_rate`) is the fraction of predictions that
fall inside their candidate set. When the sets usually hold the true class, a
better classifier predicts a candidate more often, so
:func:`~sklearn_npll.covering_rate_scorer` works as ``scoring=`` of
:class:`~sklearn.model_selection.GridSearchCV`, with the candidate matrix in
place of ``y``. The folds come from
:class:`~sklearn_npll.model_selection.CandidateSetKFold`, shuffled and
stratified on the sets: with a candidate matrix, ``cv=3`` would be an
unshuffled ``KFold``, and on data stored class by class each fold would test
classes its training part never saw.

Here we search the learning rate and check, with true labels we would not
have in practice, that the covering rate ranks the settings as test accuracy
does.

.. note::
   Tiny settings (600 digits as feature vectors, CC with 15 epochs) so that
   the example runs at every build; the search works the same on
   :class:`~sklearn_npll.CoRegClassifier` or on a whole label-free
   ``Pipeline``, with real epochs.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from sklearn_npll import CCClassifier, covering_rate_scorer, make_partial_labels
from sklearn_npll.model_selection import CandidateSetKFold

torch.set_num_threads(1)
digits = load_digits()
X_all = (digits.data / 16).astype(np.float32)
X, X_test, y, y_test = train_test_split(X_all, digits.target, train_size=600,
                                        test_size=400, stratify=digits.target,
                                        random_state=0)
Y = make_partial_labels(y, partial_rate=0.2, noise_rate=0.2, random_state=0)

lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
search = GridSearchCV(CCClassifier(max_epochs=15, batch_size=64, random_state=0),
                      {"lr": lrs}, scoring=covering_rate_scorer,
                      cv=CandidateSetKFold(3, random_state=0))
search.fit(X, Y)                     # candidate sets only
print("chosen:", search.best_params_)

# %%
# Covering rate (cross-validated, no true label) against test accuracy (true
# labels, for this check only) for every learning rate.
test_accuracy = [CCClassifier(max_epochs=15, batch_size=64, lr=lr, random_state=0)
                 .fit(X, Y).score(X_test, y_test) for lr in lrs]
for lr, cover, acc in zip(lrs, search.cv_results_["mean_test_score"], test_accuracy):
    print(f"lr={lr:g}: covering rate {cover:.3f}, test accuracy {acc:.3f}")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogx(lrs, search.cv_results_["mean_test_score"], "o-",
            label="covering rate (CV, no labels)")
ax.semilogx(lrs, test_accuracy, "s--", label="test accuracy (true labels)")
ax.axvline(search.best_params_["lr"], color="grey", ls=":", label="chosen")
ax.set(xlabel="learning rate", ylim=(0, 1.05))
ax.legend()
plt.show()
