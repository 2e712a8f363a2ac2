"""Prediction and scoring of the estimators, batch by batch."""

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .._data.annotated import AnnotatedImages
from .._data.candidates import holds_candidate_sets
from .._data.inputs import InputData
from .._nn.augment import Normalize
from ..metrics import covering_rate, covering_rate_scorer
from .context import batch_to_device
from .validation import check_X

__all__ = ["PredictionMixin"]


class PredictionMixin:
    """Mixin of :class:`~sklearn_npll._estimator.base.PartialLabelNet`:
    inference, ``predict``, ``predict_proba`` and ``score``."""

    def infer(self, x):
        """Logits of one batch: the test-time normalisation, then the mean
        of the inference networks' logits (eval mode, no gradient).

        Parameters
        ----------
        x : torch.Tensor
            A batch of inputs as the estimator stores them: ``uint8`` or
            [0, 1] float images ``(B, C, H, W)``, or features ``(B, d)``.

        Returns
        -------
        logits : torch.Tensor of shape (B, n_classes)
        """
        networks = self.inference_networks()
        for network in networks:
            network.eval()
        device = torch.device(self.device_)
        test = Normalize(mean=self.input_mean_, std=self.input_std_)
        with torch.no_grad(), self.mixed_precision():
            x = test(torch.as_tensor(x).to(device), None)
            return torch.stack([net(x) for net in networks]).mean(0).float()

    def forward_iter(self, X, training=False, device="cpu"):
        """Yield the logits of :meth:`infer` batch by batch over ``X``.

        Parameters
        ----------
        X : inputs as in :meth:`predict`
        training : bool, default=False
            Must be False: the estimators' training batches are drawn by
            their own epochs, not by a forward pass.
        device : str, default="cpu"
            Where the yielded tensors go.

        Yields
        ------
        logits : torch.Tensor of shape (batch, n_classes)
        """
        if training:
            raise NotImplementedError(
                f"{type(self).__name__} trains with its own batches (augmented views, "
                "network-specific splits); forward(training=True) has no meaning here.")
        data = X if isinstance(X, InputData) else self._check_predict_X(X)
        batch_size = 2 * self.batch_size
        for start in range(0, len(data), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data)))
            x = batch_to_device(data, rows, torch.device(self.device_))
            yield self.infer(x).to(device)

    def _predict_logits(self, data):
        # through forward_iter, so that skorch's scoring callbacks can serve
        # the predictions they cached from the batches
        out = [logits.float().cpu()
               for logits in self.forward_iter(data, device=self.device_)]
        return torch.cat(out).cpu() if out else torch.zeros(0, self.n_classes_)

    def _predict_indices(self, data):
        return self._predict_logits(data).argmax(1).numpy()

    def _check_predict_X(self, X):
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")
        if getattr(self, "_diverged", None):
            raise NotFittedError(
                f"This {type(self).__name__} cannot predict: its last fit failed "
                f"({self._diverged}) and left non-finite parameters. Refit it.")
        if isinstance(X, AnnotatedImages):
            X = X.images
        return check_X(self, X, reset=False)

    def predict_proba(self, X):
        """Class probabilities: softmax of the networks' mean logits.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Samples of the same kind as in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        logits = self._predict_logits(self._check_predict_X(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X):
        """Predicted labels from ``classes_`` (class names when known).

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Samples of the same kind as in :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            One predicted class label per sample.
        """
        data = self._check_predict_X(X)
        return self.classes_[self._predict_indices(data)]

    def score(self, X, y=None, sample_weight=None):
        """Accuracy for 1-D labels; covering rate for candidate sets.

        With ``y=None`` and ``X`` the annotator's output, the covering rate
        against the annotator's candidate sets: model selection without any
        true label.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Samples of the same kind as in :meth:`fit`.
        y : array-like of shape (n,) or (n, C), DataFrame, list of sets, or None
            True labels (1-D) or candidate sets; None when ``X`` is the
            annotator's output. The columns of candidate sets meet
            ``classes_`` by one rule: a DataFrame's columns (or
            ``X.classes``) are matched by name, a plain 0/1 matrix's columns
            must follow ``classes_`` (sorted, for a model fitted on labels or
            sets of strings), sets are read by name; see
            :func:`~sklearn_npll.metrics.covering_rate_scorer`.
        sample_weight : array-like of shape (n,), default=None
            Used with 1-D labels.

        Returns
        -------
        score : float
            Accuracy, or the fraction of predictions inside their candidate set.

        Notes
        -----
        In a search over candidate sets, leave ``scoring=None`` (this
        method) or pass :func:`~sklearn_npll.metrics.covering_rate_scorer`:
        scikit-learn's ``scoring="accuracy"`` compares predictions with 1-D
        labels and fails on a candidate matrix ("a mix of
        multilabel-indicator and multiclass targets"). Both warn when the
        sets hold a class no training set held (``candidate_counts_`` is
        0), as a cross-validation split in class order does.
        """
        if y is None:
            if not isinstance(X, AnnotatedImages):
                raise ValueError(
                    "score needs y (labels or candidate sets) unless X is the output of "
                    "VLMPartialAnnotator.transform, which carries candidate sets.")
        elif not holds_candidate_sets(y):
            return super().score(X, y, sample_weight=sample_weight)
        return covering_rate_scorer(self, X, y)

    def _score_hold_out(self, ctx):
        """Predict the validation hold-out batch by batch, sending skorch's
        batch events (``training=False``, ``batch=(X, Y)``, ``y_pred`` the
        logits, ``loss`` the batch's ``valid_loss``), and record
        ``valid_loss``, ``valid_covering_rate`` and
        ``valid_covering_rate_best``."""
        data, Y = ctx.valid_data, ctx.valid_Y
        logits = []
        for start in range(0, len(data), self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, len(data)))
            x = data.get_batch(rows).to(ctx.device)
            y = torch.as_tensor(Y[rows], dtype=torch.float32, device=ctx.device)
            self.notify("on_batch_begin", batch=(x, y), training=False)
            y_pred = self.infer(x)
            # negative log of the probability mass on the candidate set
            loss = (torch.logsumexp(y_pred, 1)
                    - torch.logsumexp(y_pred.masked_fill(y <= 0, -torch.inf), 1)).mean()
            self.history.record_batch("valid_loss", float(loss))
            self.history.record_batch("valid_batch_size", len(rows))
            self.notify("on_batch_end", batch=(x, y), training=False, loss=loss,
                        y_pred=y_pred)
            logits.append(y_pred.cpu())
        score = covering_rate(Y, torch.cat(logits).argmax(1).numpy())
        earlier = [row["valid_covering_rate"] for row in self.history[:-1]
                   if "valid_covering_rate" in row]
        self.history.record("valid_covering_rate", score)
        self.history.record("valid_covering_rate_best", all(score > v for v in earlier))
