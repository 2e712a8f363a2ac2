"""Networks: backbones, the classifier and Co-Reg networks, batched
augmentation. Imports nothing of the estimators."""
