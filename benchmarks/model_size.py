"""Size of a fitted CoRegClassifier for serving, and parity of its exports.

Fits a default ``CoRegClassifier`` (default backbone, queue and projection;
only the number of epochs and the batch size are small) on random RGB
images, then reports:

- the bytes of the weights ``predict`` uses (encoders, classifier heads and
  their batch-norm buffers);
- the pickle by default (prediction path only) and with
  ``keep_training_state=True`` (also momentum encoders, projection heads,
  queues, prediction memories, prototypes, loss histories, optimizer buffers),
  and their ratio to the weights;
- the ONNX and ``torch.export`` files, and the largest absolute difference
  of their probabilities (onnxruntime on CPU; the loaded ``.pt2`` program)
  from ``predict_proba``, on a batch of unseen images.

At 32 px the default backbone is PreAct ResNet-18; under 32 px a small CNN.
``--smoke`` uses 16 px images and 16 samples (seconds; what the test suite
runs). Run from the repository root with the package and the ``onnx`` extra
installed.

Examples
--------
python benchmarks/model_size.py --smoke
python benchmarks/model_size.py --image-size 32 --n-samples 64
"""

import argparse
import io
import os
import pickle
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn_npll import CoRegClassifier  # noqa: E402
from sklearn_npll.export import load_torch_export, to_onnx, to_torch_export  # noqa: E402


def weight_bytes(clf):
    nets = [net.for_prediction() for net in clf.inference_networks()]
    return sum(t.numel() * t.element_size() for net in nets
               for t in [*net.parameters(), *net.buffers()])


def pickled_bytes(clf):
    buffer = io.BytesIO()
    pickle.dump(clf, buffer)
    return buffer.tell()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="16 px, 16 samples")
    args = parser.parse_args(argv)
    if args.smoke:
        args.image_size, args.n_samples = 16, 16
    rng = np.random.RandomState(0)
    size = args.image_size
    X = rng.randint(0, 256, (args.n_samples, size, size, 3)).astype(np.uint8)
    y = np.array(["cat", "dog", "car"])[np.arange(args.n_samples) % 3]
    X_new = rng.randint(0, 256, (8, size, size, 3)).astype(np.uint8)

    start = time.perf_counter()
    clf = CoRegClassifier(max_epochs=args.max_epochs, warmup_epochs=1, batch_size=8,
                          random_state=0).fit(X, y)
    print(f"fit: {args.n_samples} images of {size} px, {args.max_epochs} epochs, "
          f"backbone {type(clf.module_.encoder).__name__}, {time.perf_counter() - start:.1f} s")

    weights = weight_bytes(clf)
    default = pickled_bytes(clf)
    clf.keep_training_state = True
    full = pickled_bytes(clf)
    clf.keep_training_state = False
    mb = 1e6
    print(f"weights predict uses:               {weights / mb:9.3f} MB")
    print(f"pickle (default):                   {default / mb:9.3f} MB  "
          f"({default / weights:.3f} x the weights)")
    print(f"pickle (keep_training_state=True):  {full / mb:9.3f} MB  "
          f"({full / weights:.3f} x the weights)")

    expected = clf.predict_proba(X_new)
    x = torch.as_tensor(X_new).permute(0, 3, 1, 2).float().div(255)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = to_onnx(clf, os.path.join(folder, "model.onnx"))
        pt2_path = to_torch_export(clf, os.path.join(folder, "model.pt2"))
        print(f"ONNX file:                          {os.path.getsize(onnx_path) / mb:9.3f} MB")
        print(f"torch.export file:                  {os.path.getsize(pt2_path) / mb:9.3f} MB")
        import onnxruntime

        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        _, proba_onnx = session.run(None, {"x": x.numpy()})
        module, _ = load_torch_export(pt2_path)
        with torch.no_grad():
            proba_pt2 = module(x)[1].numpy()
    print(f"max |onnxruntime - predict_proba|:  {np.abs(proba_onnx - expected).max():.2e}")
    print(f"max |torch.export - predict_proba|: {np.abs(proba_pt2 - expected).max():.2e}")


if __name__ == "__main__":
    main()
