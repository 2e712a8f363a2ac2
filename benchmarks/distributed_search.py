"""Speed-up of a GridSearchCV over CoRegClassifier on a local Dask cluster
(2 worker processes, one thread each) against the same search in one
process, data scattered once; checks that both give the same results.

The estimator trains on scikit-learn's digits as feature vectors (64
features) with noisy candidate sets. The cluster is started and warmed up
(every worker imports the library and fits once) before timing. The
speed-up is bounded by the free cores: on a busy machine it is lower.

Examples
--------
python benchmarks/distributed_search.py --smoke
python benchmarks/distributed_search.py --epochs 20
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sklearn_npll import CoRegClassifier, make_partial_labels
from sklearn_npll.distributed import cluster_backend
from sklearn_npll.model_selection import CandidateSetKFold


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds of work")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 3
    from distributed import Client

    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Y = make_partial_labels(y, partial_rate=0.1, noise_rate=0.2, random_state=0)
    estimator = CoRegClassifier(max_epochs=args.epochs, warmup_epochs=args.epochs // 2,
                                batch_size=128, queue_size=512, random_state=0)
    grid = {"lr": [0.01, 0.05], "lambda_u": [0.5, 1.0]}

    def search(n_jobs):
        return GridSearchCV(estimator, grid, cv=CandidateSetKFold(2, random_state=0),
                            n_jobs=n_jobs)

    start = time.perf_counter()
    sequential = search(None).fit(X, Y)
    t_seq = time.perf_counter() - start
    with Client(n_workers=args.workers, threads_per_worker=1, processes=True,
                dashboard_address=None) as client:
        client.wait_for_workers(args.workers)
        with cluster_backend("dask", scatter=[X, Y]) as (Xs, Ys):
            GridSearchCV(estimator.set_params(max_epochs=1, warmup_epochs=0), {"lr": [0.01]},
                         cv=CandidateSetKFold(args.workers, random_state=0),
                         n_jobs=-1).fit(Xs, Ys)  # warm-up
            estimator.set_params(max_epochs=args.epochs, warmup_epochs=args.epochs // 2)
            start = time.perf_counter()
            parallel = search(-1).fit(Xs, Ys)
            t_par = time.perf_counter() - start
    same = np.array_equal(parallel.cv_results_["mean_test_score"],
                          sequential.cv_results_["mean_test_score"])
    print(f"digits ({len(X)} samples), {len(sequential.cv_results_['params'])} candidates x "
          f"2 folds, {args.epochs} epochs per fit; equal cv_results_: {same}")
    print(f"  sequential, one process: {t_seq:7.2f} s")
    print(f"  dask, {args.workers} workers:        {t_par:7.2f} s")
    print(f"  speed-up: {t_seq / t_par:.2f}x")


if __name__ == "__main__":
    main()
