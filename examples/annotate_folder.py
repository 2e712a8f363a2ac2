"""Label a folder of images without manual labels: a vision-language model
proposes candidate sets, Co-Reg learns a classifier from them.

The class names given on the command line are the only supervision. The
image files found (recursively) are given to a pipeline
``VLMPartialAnnotator -> CoRegClassifier`` as paths: both read them with the
library's reader (upright by their EXIF orientation, 16-bit scans rescaled),
the annotator at its model's resolution, the classifier resized and
centre-cropped to a square of ``--image-size`` pixels. The script prints the
candidate-set statistics and how the trained classifier spreads the images
over the classes, and saves the fitted pipeline with joblib (load it with
``joblib.load`` and call ``predict`` on new image files of any size).
Unreadable files stop the run with one error that lists them all, or, with
``--skip-unreadable``, are left out with a warning.

Usage::

    python examples/annotate_folder.py photos/ --classes cat dog "sports car" \\
        --cache-dir embedding_cache --output pipeline.joblib

Without network access, point ``--pretrained`` to a local open_clip
checkpoint of the chosen ``--model-name``::

    python examples/annotate_folder.py photos/ --classes cat dog \\
        --model-name ViT-B-32 --pretrained weights/open_clip_pytorch_model.bin

A custom architecture can be registered from its open_clip JSON config with
``--model-config my-model.json`` (then ``--model-name my-model``).
"""

import argparse
import collections
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.pipeline import Pipeline

from sklearn_npll import CoRegClassifier
from sklearn_npll.annotate import VLMPartialAnnotator

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def find_images(folder):
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not paths:
        sys.exit(f"No image files ({', '.join(sorted(EXTENSIONS))}) found under {folder}.")
    return paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Annotate a folder of images with a VLM and train Co-Reg on the result."
    )
    parser.add_argument("folder", help="folder of images (searched recursively)")
    parser.add_argument("--classes", nargs="+", required=True,
                        help="class names, as a caption would write them")
    parser.add_argument("--model-name", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--pretrained", default="openai",
                        help="open_clip pretrained tag or path of a local checkpoint")
    parser.add_argument("--model-config", help="JSON config of an extra open_clip architecture")
    parser.add_argument("--templates", choices=["small", "imagenet"], default="small")
    parser.add_argument("--mode", choices=["multi_prompt", "topk", "prob_ratio"],
                        default="multi_prompt", help="how candidate sets are made")
    parser.add_argument("--cache-dir", help="on-disk cache of image embeddings")
    parser.add_argument("--image-size", type=int, default=64,
                        help="side of the square images the classifier trains on")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave unreadable files out (with a warning) instead of stopping")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--warmup-epochs", type=int, default=None,
                        help="default: half of --max-epochs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--output", default="pipeline.joblib", help="where to save the pipeline")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.model_config:
        import open_clip

        open_clip.add_model_config(args.model_config)
    images = [str(path) for path in find_images(args.folder)]
    print(f"{len(images)} images from {args.folder}, trained at {args.image_size}px; "
          f"classes: {args.classes}")
    on_bad_image = "skip" if args.skip_unreadable else "raise"

    warmup = args.warmup_epochs if args.warmup_epochs is not None else args.max_epochs // 2
    pipe = Pipeline([
        ("annotate", VLMPartialAnnotator(
            class_names=args.classes, model_name=args.model_name,
            pretrained=args.pretrained, templates=args.templates, mode=args.mode,
            cache_dir=args.cache_dir, device=args.device, verbose=args.verbose,
            on_bad_image=on_bad_image,
        )),
        ("coreg", CoRegClassifier(
            max_epochs=args.max_epochs, warmup_epochs=warmup, batch_size=args.batch_size,
            image_size=args.image_size, on_bad_image=on_bad_image, device=args.device,
            random_state=args.random_state, verbose=int(args.verbose),
        )),
    ])
    try:
        pipe.fit(images)
    except OSError as exc:  # weights neither cached nor downloadable
        sys.exit(str(exc))

    annotator = pipe.named_steps["annotate"]
    stats = annotator.candidate_stats_
    print(f"candidate sets: mean size {stats['mean_size']:.2f}, "
          f"sizes {dict(sorted(stats['size_counts'].items()))} "
          f"({len(annotator.templates_)} templates, mode {args.mode})")

    # with --skip-unreadable, the files not read have no vote
    readable = [path for path, votes in zip(images, annotator.votes_) if (votes >= 0).any()]
    zero_shot = annotator.predict(readable)  # embeddings come from the cache
    predicted = pipe.predict(readable)
    print(f"Co-Reg agrees with the zero-shot label on {np.mean(predicted == zero_shot):.1%} "
          "of the images")
    counts = collections.Counter(predicted.tolist())
    width = max(len(str(c)) for c in args.classes)
    for name in args.classes:
        print(f"  {name:<{width}}  {counts.get(name, 0):6d} images")

    joblib.dump(pipe, args.output)
    print(f"fitted pipeline saved to {args.output}")
    return pipe


if __name__ == "__main__":
    main()
