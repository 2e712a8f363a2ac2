"""What the estimators train on: inputs turned into tensors, the image store
and reader, candidate sets. Imports nothing of the estimators."""
