"""A folder of real-looking photos through annotation and Co-Reg training.

Generates ``--n-images`` JPEG and PNG files of mixed sizes (each side between
``--min-size`` and ``--max-size`` pixels) and colour modes (RGB, grey, RGBA,
palette), annotates them with a tiny open_clip model with random weights
(``VLMPartialAnnotator``, no download), then trains ``CoRegClassifier`` at
``--image-size`` px on the file paths, and again on the same images given as
an in-memory uint8 array. It reports:

- files opened and decoded per fit (each file must be decoded once: the
  header of each file is read once more to resolve sizes and modes);
- seconds of the decode pass (decoding and resizing into the uint8 store);
- peak memory during the fit: resident memory of this process plus the
  unique memory of its decode workers, sampled every 50 ms, against the
  budget "memory before the fit + the store + 1 GiB";
- seconds per epoch (median) of the file fit against the array fit, in the
  same run, and their ratio (after the decode pass both train from a store).

Example::

    python benchmarks/photo_folder.py                      # 2,000 photos, 300-4000 px
    python benchmarks/photo_folder.py --folder PHOTOS      # keep the photos for a rerun
    python benchmarks/photo_folder.py --smoke              # seconds: 40 small photos
"""

import argparse
import concurrent.futures as cf
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

MODES = ["RGB", "L", "RGBA", "P"]
CLASSES = ["cat", "dog", "car", "tree"]


# ------------------------------------------------------------------ photos
def _make_photo(job):
    """A smooth random picture (a bicubic upscale of 6x6 random pixels plus
    mild noise): compresses like a photo, unlike pure noise."""
    from PIL import Image

    path, h, w, mode, seed = job
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)
    if mode == "RGBA":
        im.putalpha(200)
    elif mode == "P":
        im = im.convert("P", dither=Image.Dither.NONE)
    else:
        im = im.convert(mode)
    if path.endswith(".jpg"):
        im.save(path, quality=85)
    else:
        im.save(path, compress_level=1)
    return os.path.getsize(path)


def make_folder(folder, n, min_size, max_size, seed=0, jobs=None):
    """Write ``n`` photos into ``folder`` (kept if already there); return the
    paths and the seconds it took."""
    rng = np.random.default_rng(seed)
    todo, paths = [], []
    for i in range(n):
        h, w = (int(s) for s in rng.integers(min_size, max_size + 1, 2))
        mode = MODES[i % len(MODES)]
        path = os.path.join(folder, f"photo{i:05d}." + ("jpg" if mode in ("RGB", "L") else "png"))
        paths.append(path)
        if not os.path.exists(path):
            todo.append((path, h, w, mode, seed * 100_003 + i))
    start = time.perf_counter()
    if todo:
        with cf.ProcessPoolExecutor(jobs or os.cpu_count()) as pool:
            list(pool.map(_make_photo, todo, chunksize=8))
    return paths, time.perf_counter() - start


# ---------------------------------------------------------------- counters
class FileLog:
    """Counts Image.open calls and pixel decodes of image files, in this
    process and in DataLoader workers forked from it (they append to one log)."""

    def __init__(self, folder):
        self.path = os.path.join(folder, "file-log.txt")
        self._patched = None

    def _write(self, line):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (line + "\n").encode())
        os.close(fd)

    def __enter__(self):
        from PIL import Image, ImageFile

        if os.path.exists(self.path):
            os.remove(self.path)
        open_, load = Image.open, ImageFile.ImageFile.load
        log = self

        def counting_open(fp, *args, **kwargs):
            log._write(f"open\t{os.fspath(fp)}")
            return open_(fp, *args, **kwargs)

        def counting_load(im):
            if getattr(im, "_im", None) is None and getattr(im, "filename", None):
                log._write(f"decode\t{im.filename}")
            return load(im)

        self._patched = (open_, load)
        Image.open, ImageFile.ImageFile.load = counting_open, counting_load
        return self

    def __exit__(self, *exc):
        from PIL import Image, ImageFile

        Image.open, ImageFile.ImageFile.load = self._patched

    def counts(self, kind):
        counts = {}
        if os.path.exists(self.path):
            for line in Path(self.path).read_text().splitlines():
                k, name = line.split("\t", 1)
                if k == kind:
                    counts[name] = counts.get(name, 0) + 1
        return counts


class PeakMemory:
    """Peak of (this process's RSS + its children's unique memory), sampled."""

    def __init__(self, interval=0.05):
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.peak = self.peak_main = 0
        self._stop = threading.Event()

    def sample(self):
        main = self.process.memory_info().rss
        children = 0
        for child in self.process.children(recursive=True):
            try:
                children += child.memory_full_info().uss
            except Exception:  # noqa: BLE001 - a worker that just exited
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak = max(self.peak, main + children)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def rss():
    import psutil

    return psutil.Process().memory_info().rss


# --------------------------------------------------------------------- run
def coreg(args):
    from sklearn_npll import CoRegClassifier
    from sklearn_npll._nn.backbones import SmallCNN

    return CoRegClassifier(SmallCNN, module__in_channels=3, module__width=args.width,
                           image_size=args.image_size, max_epochs=args.epochs,
                           warmup_epochs=args.warmup, start_contrastive=0,
                           batch_size=args.batch_size, queue_size=1024,
                           num_workers=args.num_workers, random_state=0)


def decode_only(args, paths, workdir):
    from sklearn_npll._data.image_store import load_images

    gc.collect()
    before = rss()
    with FileLog(workdir.name) as log, PeakMemory() as memory:
        t = time.perf_counter()
        data, _ = load_images(paths, args.image_size, num_workers=args.num_workers)
        seconds = time.perf_counter() - t
    decodes = [log.counts("decode").get(p, 0) for p in paths]
    print(f"decode pass: {seconds:.2f} s for {len(paths)} files ({sum(decodes)} decodes, each "
          f"file {min(decodes)}-{max(decodes)} times) into a "
          f"{data.data.nelement() / 2**20:.1f} MiB uint8 store {tuple(data.data.shape)}; peak "
          f"memory {memory.peak / 2**20:.0f} MiB (this process {memory.peak_main / 2**20:.0f} "
          f"MiB + workers' unique memory) = before + {(memory.peak - before) / 2**20:.0f} MiB",
          flush=True)
    workdir.cleanup()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-images", type=int, default=2000)
    p.add_argument("--min-size", type=int, default=300)
    p.add_argument("--max-size", type=int, default=4000)
    p.add_argument("--folder", help="where the photos go (kept); default: a temporary folder")
    p.add_argument("--image-size", type=int, default=64, help="training size (px)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=16, help="width of the SmallCNN backbone")
    p.add_argument("--num-workers", type=int, default=None, help="decode workers")
    p.add_argument("--decode-only", action="store_true",
                   help="only the decode pass (no annotation, no training), in this fresh "
                        "process: seconds, decodes per file and peak memory")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long check: 40 photos of 300-1200 px, 2 epochs at 32 px")
    args = p.parse_args(argv)
    if args.smoke:
        args.n_images, args.max_size, args.image_size = 40, 1200, 32
        args.epochs, args.batch_size, args.width = 2, 16, 8

    import torch

    from sklearn_npll._estimator import validation as _loading
    from sklearn_npll.annotate import VLMPartialAnnotator
    from annotator_throughput import tiny_checkpoint

    torch.manual_seed(0)
    workdir = tempfile.TemporaryDirectory(prefix="npll-photos-")
    folder = args.folder or workdir.name
    os.makedirs(folder, exist_ok=True)
    footprint = rss()

    paths, gen_seconds = make_folder(folder, args.n_images, args.min_size, args.max_size)
    total_mb = sum(os.path.getsize(p) for p in paths) / 2**20
    print(f"photos: {len(paths)} files, {total_mb:.0f} MiB, sides {args.min_size}-"
          f"{args.max_size} px, modes {'/'.join(MODES)}; generated in {gen_seconds:.1f} s",
          flush=True)

    if args.decode_only:
        return decode_only(args, paths, workdir)

    model_name, checkpoint = tiny_checkpoint(workdir.name)
    annotator = VLMPartialAnnotator(CLASSES, model_name=model_name, pretrained=checkpoint)
    t = time.perf_counter()
    annotated = annotator.fit_transform(paths)
    candidates = np.asarray(annotated.candidates)
    print(f"annotation (tiny random open_clip, full-resolution reads): "
          f"{time.perf_counter() - t:.1f} s, mean set size {candidates.sum(1).mean():.2f}",
          flush=True)

    # the file fit: time its decode pass and keep its store for the array fit
    store, decode_seconds = {}, []
    load_images = _loading.load_images

    def timed_load(*a, **k):
        t0 = time.perf_counter()
        with PeakMemory() as decode_memory:
            data, size = load_images(*a, **k)
        decode_seconds.append(time.perf_counter() - t0)
        store["data"], store["decode_peak"] = data, decode_memory.peak
        return data, size

    gc.collect()
    before = rss()
    _loading.load_images = timed_load
    try:
        with FileLog(workdir.name) as log, PeakMemory() as memory:
            t = time.perf_counter()
            files = coreg(args).fit(annotated)
            fit_seconds = time.perf_counter() - t
    finally:
        _loading.load_images = load_images
    opens, decodes = log.counts("open"), log.counts("decode")
    data = store["data"]
    store_mb = data.data.nelement() * data.data.element_size() / 2**20
    budget = before + data.data.nelement() * data.data.element_size() + 2**30
    per_file = [decodes.get(p, 0) for p in paths]
    print(f"file fit: {fit_seconds:.1f} s; decode pass {decode_seconds[0]:.2f} s into a "
          f"{'memory-mapped' if data.on_disk else 'in-memory'} uint8 store of "
          f"{store_mb:.1f} MiB {tuple(data.data.shape)}; peak memory of the decode pass "
          f"{store['decode_peak'] / 2**20:.0f} MiB = before the fit + "
          f"{(store['decode_peak'] - before) / 2**20:.0f} MiB", flush=True)
    print(f"files decoded per fit: {sum(per_file)} decodes of {len(paths)} files (each file "
          f"{min(per_file)}-{max(per_file)} times); Image.open calls per file: "
          f"{min(opens.get(p, 0) for p in paths)}-{max(opens.get(p, 0) for p in paths)} "
          "(header read + decode)", flush=True)
    print(f"peak memory during the fit: {memory.peak / 2**20:.0f} MiB (this process "
          f"{memory.peak_main / 2**20:.0f} MiB + workers' unique memory); before the fit "
          f"{before / 2**20:.0f} MiB, runtime at start {footprint / 2**20:.0f} MiB; budget "
          f"before + store + 1 GiB = {budget / 2**20:.0f} MiB: "
          f"{'within' if memory.peak <= budget else 'OVER'}", flush=True)

    # the same images as an in-memory uint8 array (N, C, H, W)
    X = data.data.numpy().copy()
    del store["data"], data
    t = time.perf_counter()
    arrays = coreg(args).fit(X, candidates)
    array_seconds = time.perf_counter() - t
    file_epochs = list(files.history[:, "dur"])
    array_epochs = list(arrays.history[:, "dur"])
    ratio = statistics.median(file_epochs) / statistics.median(array_epochs)
    print(f"array fit: {array_seconds:.1f} s", flush=True)
    print(f"seconds per epoch, median of {len(file_epochs)}: files "
          f"{statistics.median(file_epochs):.3f}, array {statistics.median(array_epochs):.3f}; "
          f"ratio {ratio:.2f}x", flush=True)
    same = np.array_equal(files.predict_proba(X), arrays.predict_proba(X))
    print(f"predictions of the two fits identical: {same}", flush=True)

    result = dict(
        args=vars(args), n_files=len(paths), folder_mib=total_mb, generate_seconds=gen_seconds,
        decodes_per_file=[min(per_file), max(per_file)], total_decodes=sum(per_file),
        opens_per_file=[min(opens.get(p, 0) for p in paths), max(opens.get(p, 0) for p in paths)],
        decode_pass_seconds=decode_seconds[0], store_mib=store_mb,
        decode_peak_mib=store["decode_peak"] / 2**20,
        peak_mib=memory.peak / 2**20, peak_main_mib=memory.peak_main / 2**20,
        before_fit_mib=before / 2**20, budget_mib=budget / 2**20,
        file_epoch_seconds=file_epochs, array_epoch_seconds=array_epochs,
        epoch_ratio=ratio, identical_predictions=bool(same))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
