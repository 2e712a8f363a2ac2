"""The epoch of the one-network methods: one pass over the training rows, a
per-batch loss, one step per batch."""

from .._estimator.training import Trainer, mean_terms

__all__ = ["OneNetworkTrainer"]

#: The augmentation of each value of the estimators' ``augment`` parameter.
AUGMENTATIONS = {"weak": "weak", "strong": "strong", "none": "test"}


class OneNetworkTrainer(Trainer):
    """Trains ``module_`` on :meth:`batch_loss`; subclasses give the loss
    and, optionally, state kept across batches."""

    def begin_epoch(self):
        """Hook run before the first batch of every epoch."""

    def batch_loss(self, logits, rows):
        """The loss of one batch (``rows`` index the training set)."""
        raise NotImplementedError

    def after_step(self, logits, rows):
        """Hook run after each optimizer step with the batch's detached logits."""

    def epoch_terms(self):
        """Extra per-epoch values for the history."""
        return {}

    def run_epoch(self, epoch):
        est = self.estimator
        self.begin_epoch()
        self.announce(self.n_batches(len(self.rows), est.batch_size))

        def loss_terms(logits, rows):
            loss = self.batch_loss(logits, rows)
            return loss, {"loss": loss}

        def steps():
            for logits, rows, terms in self.train_batches(
                    epoch, est.module_, est.batch_size, AUGMENTATIONS[est.augment],
                    loss_terms):
                self.after_step(logits, rows)
                yield terms

        terms, n_steps = mean_terms(steps())
        est.history.record("train_batch_count", n_steps)
        return {**terms, **self.epoch_terms()}
