"""The skorch-facing estimator base: its contract, input validation,
persistence, device and precision policy, data-parallel hooks."""
