"""Helpers shared by the test modules."""

import json

import torch
from torch import nn

# The expected failures of scikit-learn's common checks for the skorch-based
# estimators, each with its reason.
EXPECTED_FAILED_CHECKS = {
    "check_no_attributes_set_in_init": (
        "skorch's NeuralNet keeps its bookkeeping (history_, initialized_, "
        "virtual_params_) from construction on, and routes module__* parameters "
        "through **kwargs"),
}


def record_batch_sizes(owner, name, setattr=setattr):
    """Wrap the method ``owner.name`` (of a class, or of one object) so that
    every call records the length of its first argument; return that list.
    Pass ``monkeypatch.setattr`` as ``setattr`` to undo it after the test."""
    original = getattr(owner, name)
    seen = []
    if isinstance(owner, type):
        def recording(self, x, *args, **kwargs):
            seen.append(len(x))
            return original(self, x, *args, **kwargs)
    else:
        def recording(x, *args, **kwargs):
            seen.append(len(x))
            return original(x, *args, **kwargs)
    setattr(owner, name, recording)
    return seen


# A tiny open_clip architecture with random weights: the annotator's tests
# load it from a checkpoint file exactly as a user loads real weights.
TINY_CLIP_NAME = "npll-tiny-test"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8,
                   "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


def save_tiny_clip(folder):
    """Register the tiny architecture and save random weights in ``folder``;
    return the checkpoint's path."""
    import open_clip

    config = folder / f"{TINY_CLIP_NAME}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME)
    path = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return str(path)


class NaNEncoder(nn.Module):
    """An encoder for 5 features whose output is NaN: training must stop with
    an error naming the epoch and the term."""

    out_features = 4

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(5, 4)

    def forward(self, x):
        return self.layer(x) * float("nan")
