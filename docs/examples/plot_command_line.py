"""
From a photo folder to a model, on the command line
===================================================

``sklearn-npll`` (also ``python -m sklearn_npll``) takes a folder of photos
and a list of class names, and writes everything a deployer needs into one
RUN folder: the candidate sets a vision-language model proposed, the trained
Co-Reg classifier (a safe ``model.safetensors`` and ``model.onnx``), the class
names, a one-page summary and an HTML report. ``verify`` then lists the photos
most worth checking by hand, and ``train --verified`` learns from the labels a
person wrote in.

.. note::
   So that this page builds offline in seconds, the photos are generated
   (coloured squares on noise) and the teacher is a tiny open_clip model with
   random weights, registered from its config file (``--model-config``); its
   candidate sets are noise. With real photos, leave out ``--model``,
   ``--model-config`` and ``--pretrained`` (ViT-B-32 with OpenAI's weights is
   the default) and ``--epochs``, ``--backbone``, ``--width`` (chosen from the
   data).
"""

import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import open_clip
import torch
from PIL import Image

from sklearn_npll.cli import main

# Every file of this example lives in a folder of its own; the commands run
# there, as a user would run them from a terminal.
work = Path(tempfile.mkdtemp())


def sklearn_npll(*args):
    """Run ``sklearn-npll args`` as a shell would, and print what it prints
    (progress bars left out)."""
    print("$ sklearn-npll " + " ".join(shlex.quote(str(a)) for a in args))
    out, here = io.StringIO(), os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = main([str(a) for a in args])
    finally:
        os.chdir(here)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours of the epoch table
    print("\n".join(line for line in text.splitlines() if "\r" not in line and "%|" not in line))
    assert status == 0


# %%
# The photos and the teacher
# --------------------------
# 90 photos of three classes, of mixed sizes, colour modes and formats, in a
# folder and a subfolder; the true labels are kept aside to play the person
# who checks a few of them.
rng = np.random.RandomState(0)
classes = ["red", "green", "blue"]
truth = {}
(work / "photos/more").mkdir(parents=True)
for i in range(90):
    h, w = rng.randint(20, 48, 2)
    pixels = rng.randint(0, 60, (h, w, 3)).astype(np.uint8)
    pixels[h // 4:3 * h // 4, w // 4:3 * w // 4, i % 3] += 180
    image = Image.fromarray(pixels).convert(["RGB", "L", "RGBA", "RGB"][i % 4])
    name = f"{'more/' if i % 2 else ''}photo{i:02d}.{'jpg' if i % 4 == 3 else 'png'}"
    image.save(work / "photos" / name)
    truth[name] = classes[i % 3]

config = {"embed_dim": 32,
          "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8,
                         "head_width": 32},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 1}}
(work / "tiny").mkdir()
(work / "tiny/tiny-clip.json").write_text(json.dumps(config))
open_clip.add_model_config(work / "tiny/tiny-clip.json")
torch.manual_seed(0)
torch.save(open_clip.create_model("tiny-clip").state_dict(), work / "tiny/weights.pt")

# %%
# Train
# -----
# Each step says what it does; the settings the program chose from the data
# (here the image size and the batch size) are printed with their reason.
# The annotation cache and a training checkpoint live in RUN: after a crash
# or Ctrl-C, the same command continues where it stopped and ends with the
# model an uninterrupted run gives.
teacher = ["--model", "tiny-clip", "--model-config", "tiny/tiny-clip.json",
           "--pretrained", "tiny/weights.pt"]
small = ["--epochs", "6", "--backbone", "small-cnn", "--width", "8"]
sklearn_npll("train", "photos", "--classes", "red,green,blue", "--out", "run", *teacher,
             *small)

# %%
# What RUN holds:
print(sorted(p.name for p in (work / "run").iterdir()))
print((work / "run/summary.md").read_text())

# %%
# The report
# ----------
# ``run/report.html`` is one self-contained page (figures and thumbnails
# embedded): the candidate sets, the training epoch by epoch, where the
# student and the teacher disagree, and thumbnails of the most confident and
# the disputed photos. Here is the top of it, as a headless Chromium renders
# it (or, without Chromium, its first figure).
browser = next(filter(None, map(shutil.which, ["chromium", "chromium-browser",
                                               "google-chrome"])), None)
if browser:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        "--window-size=1100,1400", f"--screenshot={work / 'report.png'}",
                        (work / "run/report.html").resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
    picture = plt.imread(work / "report.png")
else:
    html = (work / "run/report.html").read_text()
    uri = html.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    import base64

    picture = plt.imread(io.BytesIO(base64.b64decode(uri)), format="png")
fig, ax = plt.subplots(figsize=(8, 10))
ax.imshow(picture)
ax.set_axis_off()
fig.tight_layout()

# %%
# The verify loop
# ---------------
# ``verify`` lists the photos most worth a look: where the student and the
# teacher disagree first, then the least confident ones, with an empty
# ``label`` column.
sklearn_npll("verify", "run", "--n", "8")
print((work / "run/verify.csv").read_text())

# %%
# A person opens each photo and writes its class (here, from the true
# labels); then the same train command with ``--verified`` trains again, and
# both Co-Reg networks always trust these photos.
with open(work / "run/verify.csv", newline="") as f:
    rows = list(csv.DictReader(f))
for row in rows:
    row["label"] = truth[row["file"]]
with open(work / "run/verify.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
sklearn_npll("train", "photos", "--classes", "red,green,blue", "--out", "run", *teacher,
             *small, "--verified", "run/verify.csv")

# %%
# Predict
# -------
# ``predict`` needs only RUN, not the vision-language model; ``--onnx`` runs
# the exported model (its preprocessing is in its metadata) and gives the
# same classes as the Python model.
sklearn_npll("predict", "run", "photos/photo00.png", "photos/more",
             "--out", "python.csv")
sklearn_npll("predict", "run", "photos/photo00.png", "photos/more", "--onnx",
             "--out", "onnx.csv")
python_rows = list(csv.DictReader(open(work / "python.csv")))
onnx_rows = list(csv.DictReader(open(work / "onnx.csv")))
print(open(work / "onnx.csv").read()[:300])
print("same classes:", [r["class"] for r in python_rows] == [r["class"] for r in onnx_rows])
