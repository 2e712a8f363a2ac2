"""
The label-free pipeline on a folder of images
=============================================

:class:`~sklearn_npll.VLMPartialAnnotator` looks at every image with many
prompt templates ("a photo of a {}", "a blurry photo of the {}", ...) and
proposes a candidate set: the classes that at least one template ranks first.
:class:`~sklearn_npll.CoRegClassifier` learns from these sets. Put in a
:class:`~sklearn.pipeline.Pipeline`, the two train a classifier from a folder
of images with no label anywhere, and the pipeline scores itself with the
covering rate against the annotator's sets.

.. warning::
   This site is built offline, so the example registers a **tiny open_clip
   architecture with random weights** and loads it from a local checkpoint
   file, exactly as you would load real weights. Its candidate sets are
   therefore noise and the accuracy is meaningless. Real use loads real
   weights, e.g. ``model_name="ViT-B-32", pretrained="openai"`` (downloaded
   once, then cached) or ``pretrained="/path/to/open_clip_model.safetensors"``.
"""

# %%
# A folder of images
# ------------------
# We write 200 digits as 16x16 RGB PNG files into a temporary folder; the
# file names carry no label.
import json
import logging
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import open_clip
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline

from sklearn_npll import CoRegClassifier, VLMPartialAnnotator

torch.set_num_threads(1)
folder = Path(tempfile.mkdtemp())
digits = load_digits()
for i, image in enumerate(digits.images[:200]):
    grey = Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((16, 16))
    grey.convert("RGB").save(folder / f"img_{i:04d}.png")
paths = sorted(str(p) for p in folder.glob("*.png"))
print(len(paths), "images in", folder.name)

# %%
# A local open_clip checkpoint (random weights: a stand-in for real ones)
# -----------------------------------------------------------------------
config = {"embed_dim": 32,
          "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8,
                         "head_width": 32},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                       "heads": 2, "layers": 1}}
(folder / "tiny-clip.json").write_text(json.dumps(config))
open_clip.add_model_config(folder / "tiny-clip.json")
torch.manual_seed(0)
checkpoint = folder / "tiny-clip.pt"
logging.disable(logging.WARNING)     # open_clip warns that the weights are random
torch.save(open_clip.create_model("tiny-clip").state_dict(), checkpoint)
logging.disable(logging.NOTSET)

# %%
# The pipeline: annotate, then learn; no labels
# ---------------------------------------------
class_names = ["zero", "one", "two", "three", "four", "five", "six", "seven",
               "eight", "nine"]
pipe = Pipeline([
    ("annotate", VLMPartialAnnotator(class_names, model_name="tiny-clip",
                                     pretrained=str(checkpoint), templates="small")),
    ("coreg", CoRegClassifier(max_epochs=6, warmup_epochs=3, start_contrastive=1,
                              batch_size=32, queue_size=256, flip=False,
                              random_state=0)),
])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pipe.fit(paths)                  # no labels anywhere
for warning in caught:               # random weights: some classes are never proposed
    print("warning:", warning.message)
print("predictions:", pipe.predict(paths[:5]))
print(f"covering rate against the annotator's sets: {pipe.score(paths):.2f}")

# %%
# Where the noise comes from
# --------------------------
# Each template votes for one class; the candidate set is the union of the
# votes. The votes of the first 20 images show how templates disagree, and
# the set sizes follow from it. Here, with random weights, the image tower
# sees almost no difference between digits, so every image gets the same
# votes and the same set (hence the covering rate of 1: the score means
# something only with real weights). With real weights most templates agree
# on easy images and sets stay small.
annotated = pipe["annotate"].transform(paths)
votes, candidates = annotated.votes, annotated.candidates
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8),
                               gridspec_kw={"width_ratios": [2, 1]})
im = ax1.imshow(votes[:20].T, cmap="tab10", vmin=0, vmax=9, aspect="auto")
ax1.set(xlabel="image", ylabel="template", title="each template's top-1 class")
fig.colorbar(im, ax=ax1, ticks=range(10))
sizes = candidates.sum(1)
ax2.hist(sizes, bins=np.arange(0.5, sizes.max() + 1.5), rwidth=0.8)
ax2.set(xlabel="candidate set size", ylabel="images")
plt.show()

# %%
# The trained classifier alone needs no VLM: ``pipe.predict`` only runs the
# annotator's input adapter, then the two networks.
import shutil

shutil.rmtree(folder)
