"""Data-parallel Co-Reg on CPU: two gloo processes launched by torchrun
against one process, same data and seed (the checks are in
``_ddp_fit.check_ranks_agree``, which ``benchmarks/gpu_check.py`` runs on a
GPU too)."""

import os

import torch

import _ddp_fit


def one_process(tmp_path):
    threads = torch.get_num_threads()
    try:
        _ddp_fit.main(str(tmp_path / "one"), sync_bn=False)
    finally:
        torch.set_num_threads(threads)
    return torch.load(tmp_path / "one.rank0.pt", weights_only=False)


def test_two_gloo_processes_track_one_process(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(_ddp_fit.__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "two"
    proc = _ddp_fit.torchrun(out, nproc=2, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(f"{out}.rank{r}.pt", weights_only=False) for r in (0, 1)]
    figures = _ddp_fit.check_ranks_agree(ranks, one_process(tmp_path), out)
    assert figures["ranks"] == 2
