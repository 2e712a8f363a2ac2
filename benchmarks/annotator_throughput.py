"""Throughput of VLMPartialAnnotator's annotation against a bare image-tower loop.

``transform`` returns a deferred annotation (the candidate sets are computed
when first read), so every timing below covers ``transform(X).candidates``:
the work a ``Pipeline``'s ``fit`` does. Measures, in one run and on one device:

- ``bare``: a loop of ``model.encode_image`` over already-preprocessed batches
  (same model, batch size and device as the annotator);
- ``transform (cold)``: annotating images it has never seen (reading,
  hashing, preprocessing, encoding, scoring, candidate sets);
- ``transform (memory cache)``: the same images again on the same instance;
- ``transform (disk cache)``: a fresh instance sharing ``cache_dir``, as every
  fold of a grid search would;
- peak memory of the cold transform: Python/numpy allocations (tracemalloc),
  process peak RSS, and CUDA peak when on a GPU;
- the cost of the image-tower digest that keys the cache (first call on a
  freshly loaded model, and the memoised call every later use makes);
- the pickle size of the fitted annotator against that of its model (which
  a fitted annotator no longer pickles);
- with ``--files N``: N synthetic photos of ``--file-size`` written as JPEG
  files, annotated cold and then by a fresh instance sharing the disk cache
  (file inputs are keyed by their bytes, so the re-run decodes nothing),
  with the resident memory at the start of the cold run and its sampled peak.

Each timing is the median of ``--repeats`` runs. With ``--tiny`` a small
random open_clip model is built and loaded from a checkpoint file, so the
script runs anywhere; ``--smoke`` is ``--tiny`` on a few hundred images
with one repeat (seconds; what the test suite runs); ``--random-weights`` does the same for the
``--model-name`` architecture (real model size, meaningless labels); with
``--model-name``/``--pretrained`` it measures a real model (weights must be
cached, downloadable, or a local checkpoint path). Run it from the
repository root with the package installed.

Examples
--------
python benchmarks/annotator_throughput.py --smoke
python benchmarks/annotator_throughput.py --tiny --n-images 256 --files 32 \
    --file-size 4000x3000 --repeats 3
python benchmarks/annotator_throughput.py --tiny --n-images 10000 --image-size 32
python benchmarks/annotator_throughput.py --model-name ViT-B-32 --random-weights \\
    --n-images 1000 --image-size 224 --repeats 1
python benchmarks/annotator_throughput.py --model-name ViT-B-32 --pretrained openai \\
    --n-images 10000 --image-size 224 --device cuda
"""

import argparse
import copy
import gc
import json
import pickle
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from sklearn_npll._vlm.cache import model_digests
from sklearn_npll.annotate import VLMPartialAnnotator
from sklearn_npll.datasets import candidate_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_folder import PeakMemory  # noqa: E402

TINY_NAME = "npll-bench-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_checkpoint(folder, model_name):
    """Save random weights of an open_clip architecture; return the file path."""
    import open_clip

    torch.manual_seed(0)
    path = Path(folder) / "random_weights.pt"
    torch.save(open_clip.create_model(model_name).state_dict(), path)
    return str(path)


def tiny_checkpoint(folder):
    """Register a tiny architecture and save random weights; return (name, path)."""
    import open_clip

    config = Path(folder) / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    return TINY_NAME, random_checkpoint(folder, TINY_NAME)


def peak_rss_mib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CPU_SECONDS = {}


def timed(fn, device, label=None):
    """Wall-clock seconds of ``fn()`` (and its process CPU seconds under ``label``)."""
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    if label is not None:
        CPU_SECONDS.setdefault(label, []).append(time.process_time() - cpu_start)
    return time.perf_counter() - start, result


def preprocessed_batches(annotator, images, batch_size, max_bytes):
    """Preprocess images once (as many as fit in ``max_bytes``) into batches."""
    from PIL import Image

    first = annotator.preprocess_(Image.fromarray(images[0]))
    n = min(len(images), max(batch_size, int(max_bytes // (first.numel() * 4))))
    start = time.perf_counter()
    tensors = [annotator.preprocess_(Image.fromarray(im)) for im in images[:n]]
    seconds = time.perf_counter() - start
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, n, batch_size)]
    return batches, n, seconds


def write_photos(folder, n, width, height, seed=0):
    """``n`` smooth synthetic photos (gradients, blobs, mild noise) as JPEG files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    # drawn small and upscaled: sizes on disk like real photos, not like noise
    small = (max(8, height // 16), max(8, width // 16))
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, size=(*small, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((width, height), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, size=(height, width, 1))
        path = Path(folder) / f"photo{i:03d}.jpg"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def annotate(annotator, images):
    """Annotate ``images`` now: ``transform`` defers until the candidates are read."""
    return annotator.transform(images).candidates


def bare_loop(model, batches, device, dtype):
    with torch.inference_mode():
        for batch in batches:
            feats = model.encode_image(batch.to(device, dtype, non_blocking=True))
            torch.nn.functional.normalize(feats.float(), dim=-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random open_clip model")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long check: --tiny, 512 images, batch 128, 1 repeat")
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights for --model-name (timings only, no download)")
    parser.add_argument("--model-name", default="ViT-B-32")
    parser.add_argument("--pretrained", default="openai", help="tag or checkpoint path")
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=32, help="side of the random images")
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-jobs", type=int, default=None, help="annotator preprocessing threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare-max-gib", type=float, default=2.0,
                        help="memory cap of the preprocessed batches of the bare loop")
    parser.add_argument("--files", type=int, default=0,
                        help="also time N JPEG files cold and from the disk cache")
    parser.add_argument("--file-size", default="4000x3000", help="WIDTHxHEIGHT of --files")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.tiny, args.n_images, args.image_size = True, 512, 32
        args.batch_size, args.repeats = 128, 1
        args.files, args.file_size = 8, "640x480"

    workdir = tempfile.TemporaryDirectory()
    if args.tiny:
        model_name, pretrained = tiny_checkpoint(workdir.name)
    elif args.random_weights:
        model_name = args.model_name
        pretrained = random_checkpoint(workdir.name, model_name)
    else:
        model_name, pretrained = args.model_name, args.pretrained
    classes = (CIFAR10 * (args.n_classes // 10 + 1))[: args.n_classes]
    classes = [f"{c} {i // 10}" if i >= 10 else c for i, c in enumerate(classes)]
    rng = np.random.default_rng(0)
    shape = (args.n_images, args.image_size, args.image_size, 3)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    warmup_images = rng.integers(0, 256, size=(args.batch_size, *shape[1:]), dtype=np.uint8)

    base = VLMPartialAnnotator(
        classes, model_name=model_name, pretrained=pretrained, batch_size=args.batch_size,
        n_jobs=args.n_jobs, device=args.device,
    )
    fit_seconds, _ = timed(base.fit, torch.device("cpu"))
    device = next(base.model_.parameters()).device
    dtype = next(base.model_.parameters()).dtype
    annotate(base, warmup_images)  # warm-up: kernels, thread pools, allocator
    n = args.n_images
    random = args.tiny or args.random_weights
    print(f"model {model_name} ({'random weights' if random else pretrained}) on {device}, "
          f"{n} images {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{len(base.templates_)} templates x {len(classes)} classes; fit {fit_seconds:.2f}s",
          flush=True)

    batches, n_bare, preprocess_seconds = preprocessed_batches(
        base, images, args.batch_size, args.bare_max_gib * 2**30
    )
    bare_loop(base.model_, batches[:1], device, dtype)  # warm-up

    # Each repeat times, back to back, a cold transform (fresh instance, fresh
    # disk cache), the same images again (memory cache), a fresh instance
    # sharing the disk cache, and the bare loop; ratios are taken within a
    # repeat so that drifting machine load affects both sides alike.
    cold, warm, disk, bare, ratios = [], [], [], [], []
    tracemalloc_peak = rss_before = rss_after = cuda_peak = None
    for repeat in range(args.repeats):
        cache_dir = Path(workdir.name) / f"cache{repeat}"
        # a fresh fit starts with an empty image cache (its prompts come
        # from the process's text cache)
        annotator = clone(base).set_params(cache_dir=cache_dir).fit()
        annotate(annotator, warmup_images)
        if repeat == 0:
            rss_before = peak_rss_mib()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            tracemalloc.start()
        seconds, out = timed(lambda: annotate(annotator, images), device, "cold")
        if repeat == 0:
            tracemalloc_peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            rss_after = peak_rss_mib()
            if device.type == "cuda":
                cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20
        cold.append(seconds)
        warm.append(timed(lambda: annotate(annotator, images), device)[0])
        sharing = clone(base).set_params(cache_dir=cache_dir).fit()
        disk.append(timed(lambda: annotate(sharing, images), device)[0])
        run_bare = lambda: bare_loop(base.model_, batches, device, dtype)  # noqa: E731
        bare.append(timed(run_bare, device, "bare")[0])
        ratios.append((n_bare / bare[-1]) / (n / cold[-1]))
        print(f"  run {repeat}: cold {cold[-1]:.3f}s, memory cache {warm[-1]:.3f}s, "
              f"disk cache {disk[-1]:.3f}s, bare loop {bare[-1]:.3f}s "
              f"({n_bare} images), overhead ratio {ratios[-1]:.2f}", flush=True)
    stats = candidate_stats(out)

    rate = lambda count, seconds: count / seconds  # noqa: E731
    results = {
        "model": model_name, "pretrained": "random weights" if random else str(pretrained),
        "device": str(device), "n_images": n, "image_size": args.image_size,
        "batch_size": args.batch_size, "n_templates": len(base.templates_),
        "n_classes": len(classes), "repeats": args.repeats,
        "bare_images": n_bare,
        "bare_img_per_s": rate(n_bare, statistics.median(bare)),
        "preprocess_only_img_per_s_single_thread": rate(n_bare, preprocess_seconds),
        "transform_cold_img_per_s": rate(n, statistics.median(cold)),
        "transform_memory_cache_img_per_s": rate(n, statistics.median(warm)),
        "transform_disk_cache_img_per_s": rate(n, statistics.median(disk)),
        "tracemalloc_peak_mib": tracemalloc_peak,
        "peak_rss_before_transform_mib": rss_before,
        "peak_rss_after_transform_mib": rss_after,
        "cuda_peak_mib": cuda_peak,
        "mean_candidates": stats["mean_size"],
        "overhead_ratio": statistics.median(ratios),
        "cpu_seconds_per_1000_images_bare": 1000 * statistics.median(CPU_SECONDS["bare"]) / n_bare,
        "cpu_seconds_per_1000_images_transform": 1000 * statistics.median(CPU_SECONDS["cold"]) / n,
        "memory_cache_speedup": statistics.median(c / w for c, w in zip(cold, warm)),
        "disk_cache_speedup": statistics.median(c / d for c, d in zip(cold, disk)),
    }

    print(f"bare encode_image loop     {results['bare_img_per_s']:10.0f} img/s "
          f"({n_bare} preprocessed images)")
    print(f"preprocess only (1 thread) "
          f"{results['preprocess_only_img_per_s_single_thread']:10.0f} img/s")
    print(f"transform, cold            {results['transform_cold_img_per_s']:10.0f} img/s "
          f"-> {1 / results['overhead_ratio']:.2f}x the bare loop's throughput "
          f"(overhead ratio bare / transform {results['overhead_ratio']:.2f}, median of runs)")
    print("process CPU time per 1000 images: "
          f"bare {results['cpu_seconds_per_1000_images_bare']:.2f}s, "
          f"transform {results['cpu_seconds_per_1000_images_transform']:.2f}s")
    print(f"transform, memory cache    {results['transform_memory_cache_img_per_s']:10.0f} img/s "
          f"-> speed-up {results['memory_cache_speedup']:.1f}x")
    print(f"transform, disk cache      {results['transform_disk_cache_img_per_s']:10.0f} img/s "
          f"-> speed-up {results['disk_cache_speedup']:.1f}x")
    print(f"peak memory of a cold transform: tracemalloc {tracemalloc_peak:.0f} MiB, "
          f"process peak RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
          + ("" if cuda_peak is None else f", CUDA {cuda_peak:.0f} MiB"))
    # the digest that keys the image cache: a fresh model object computes it once
    fresh = copy.deepcopy(base.model_)
    digest_first = timed(lambda: model_digests(fresh), device)[0]
    digest_again = statistics.median(timed(lambda: model_digests(fresh), device)[0]
                                     for _ in range(5))
    n_tensors = sum(t.numel() for t in fresh.state_dict().values())
    del fresh
    pickled = len(pickle.dumps(base))
    model_pickled = len(pickle.dumps(base.model_))
    results.update(digest_first_s=digest_first, digest_memoised_s=digest_again,
                   model_parameters=n_tensors, annotator_pickle_bytes=pickled,
                   model_pickle_bytes=model_pickled)
    print(f"model digest (whole state, {n_tensors / 1e6:.1f}M values): first "
          f"{digest_first:.3f}s, memoised {1000 * digest_again:.2f} ms")
    print(f"pickle of the fitted annotator {pickled / 2**20:.2f} MiB "
          f"(its model alone {model_pickled / 2**20:.1f} MiB, not pickled)")

    if args.files:
        width, height = (int(v) for v in args.file_size.lower().split("x"))
        folder = Path(workdir.name) / "photos"
        folder.mkdir()
        paths = write_photos(folder, args.files, width, height)
        megabytes = sum(Path(p).stat().st_size for p in paths) / 2**20
        file_cold, file_cached, file_rss = [], [], []
        for repeat in range(args.repeats):
            cache_dir = Path(workdir.name) / f"files{repeat}"
            first = clone(base).set_params(cache_dir=cache_dir).fit()
            gc.collect()
            rss_start = PeakMemory().process.memory_info().rss / 2**20
            with PeakMemory(interval=0.01) as peak:
                file_cold.append(timed(lambda: annotate(first, paths), device)[0])
            file_rss.append((rss_start, peak.peak_main / 2**20))
            again = clone(base).set_params(cache_dir=cache_dir).fit()
            file_cached.append(timed(lambda: annotate(again, paths), device)[0])
        speedups = [c / w for c, w in zip(file_cold, file_cached)]
        results.update(files_rss_start_mib=statistics.median(r[0] for r in file_rss),
                       files_rss_peak_mib=statistics.median(r[1] for r in file_rss))
        results.update(files=args.files, file_size=args.file_size, files_mib=megabytes,
                       files_cold_s=statistics.median(file_cold),
                       files_cached_s=statistics.median(file_cached),
                       files_cached_speedup=statistics.median(speedups))
        print(f"{args.files} JPEG files {args.file_size} ({megabytes:.0f} MiB): cold "
              f"{results['files_cold_s']:.3f}s, fresh instance on the disk cache "
              f"{results['files_cached_s']:.3f}s -> speed-up "
              f"{results['files_cached_speedup']:.1f}x (median of {args.repeats})")
        print(f"resident memory while annotating the files cold: "
              f"{results['files_rss_start_mib']:.0f} MiB at the start, peak "
              f"{results['files_rss_peak_mib']:.0f} MiB (sampled every 10 ms, median of "
              f"{args.repeats})")

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    workdir.cleanup()
    return results


if __name__ == "__main__":
    main()
