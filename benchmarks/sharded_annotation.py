"""Speed-up of sharded annotation on a local Dask cluster: 2 worker processes
against 1.

Writes PNG files of random pixels, saves a small random open_clip model as a
checkpoint file (its architecture registered in every worker, as a user
would for a custom model), then starts a
``distributed.LocalCluster`` (one thread per worker), loads the model on
every worker with a warm-up annotation, and times ``annotate_sharded`` on
the first 1, then 2 workers (joblib's ``workers=`` restriction) over files
none of the workers has seen (median of
``--repeats`` runs, fresh files each run). A single-process
``transform(files).candidates`` on the same files is the reference; every
sharded result is checked equal to it. The speed-up is bounded by the cores
the machine gives the workers: on a busy machine it is lower.

Examples
--------
python benchmarks/sharded_annotation.py --smoke
python benchmarks/sharded_annotation.py --n-images 600 --image-size 224 --repeats 3
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TINY_NAME = "npll-bench-shard-tiny"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 8,
                   "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 1},
}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def register(config):
    import open_clip

    open_clip.add_model_config(config)


def make_checkpoint(folder):
    """Register the architecture here; return (config path, checkpoint path)."""
    import open_clip

    config = Path(folder) / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    register(config)
    torch.manual_seed(0)
    path = Path(folder) / "tiny.pt"
    torch.save(open_clip.create_model(TINY_NAME).state_dict(), path)
    return config, str(path)


def write_files(folder, n, size, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = Path(folder) / f"s{seed}_{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds of work")
    parser.add_argument("--n-images", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_images, args.image_size, args.repeats = 48, 96, 1

    from distributed import Client
    from joblib import parallel_config

    from sklearn_npll import VLMPartialAnnotator
    from sklearn_npll.distributed import annotate_sharded

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config, checkpoint = make_checkpoint(tmp)
        params = {"model_name": TINY_NAME, "pretrained": checkpoint, "batch_size": 32,
                  "n_jobs": 1, "device": "cpu"}
        annotator = VLMPartialAnnotator(CLASSES, **params)
        warmup = write_files(tmp, 8, args.image_size, seed=999)
        runs = [write_files(tmp, args.n_images, args.image_size, seed=r)
                for r in range(args.repeats)]
        single = VLMPartialAnnotator(CLASSES, **params).fit()
        single.transform(warmup).candidates  # noqa: B018 (warm-up)
        expected, times = [], []
        for files in runs:
            start = time.perf_counter()
            expected.append(single.transform(files).candidates)
            times.append(time.perf_counter() - start)
        results = {"single process": statistics.median(times)}
        with Client(n_workers=max(args.workers), threads_per_worker=1, processes=True,
                    dashboard_address=None) as client:
            client.wait_for_workers(max(args.workers))
            client.run(register, config)
            # load the model on every worker before timing: a sequential
            # sharded annotation inside each worker fits its annotator
            client.run(lambda: annotate_sharded(annotator, warmup, n_jobs=1) and None)
            addresses = sorted(client.scheduler_info()["workers"])
            for n_workers in args.workers:
                # the first n_workers workers only (joblib passes `workers` to dask)
                with parallel_config(backend="dask", workers=addresses[:n_workers]):
                    times = []
                    for files, reference in zip(runs, expected):
                        start = time.perf_counter()
                        out = annotate_sharded(annotator, files, n_shards=4 * max(args.workers))
                        times.append(time.perf_counter() - start)
                        np.testing.assert_array_equal(out.candidates, reference)
                results[f"dask, {n_workers} worker(s)"] = statistics.median(times)
    print(f"{args.n_images} PNG files of {args.image_size} px, median of {args.repeats} "
          f"run(s); candidates equal to the single-process annotation in every run")
    for name, seconds in results.items():
        print(f"{name:>22}: {seconds:7.3f} s  ({args.n_images / seconds:7.1f} images/s)")
    if len(args.workers) > 1:
        a, b = args.workers[0], args.workers[-1]
        ratio = results[f"dask, {a} worker(s)"] / results[f"dask, {b} worker(s)"]
        print(f"speed-up of {b} workers over {a}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
