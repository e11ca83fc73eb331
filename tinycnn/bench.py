"""Benchmark: one epoch of the paper recipe through tinycnn's pipeline vs the paper's own way
(torchvision dataset, ToTensor+Normalize per image, a shuffled DataLoader of batch 64), same model
and recipe, timed in one invocation; then the peak memory of `python run.py model=paper`.

    python -m tinycnn.bench [--repeat N] [--skip-memory] [--limit N] [--device cuda]
    python -m tinycnn.bench --threads [--repeat N] [--limit N]

--threads times `python run.py model=paper` with threads=null (torch's default, one per core),
threads=1 and threads=auto, on the machine as it is and next to one busy single-thread process.

A VM's timings wander (+-15% between invocations minutes apart on the project's machine):
--repeat N runs the two pipelines N times, alternating, and reports the medians.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from tinycnn.data import load_data
from tinycnn.model import build_model
from tinycnn.record import read_metrics
from tinycnn.recipe import lr_at, make_optimizer
from tinycnn.train import train

REPO = Path(__file__).resolve().parent.parent


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()  # the GPU's queue done: the time is the training's


def paper_way(cfg, limit, device="cpu"):
    """The paper's train.py loop: per-image PIL -> ToTensor -> Normalize, DataLoader(shuffle)."""
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize((cfg.data.mean,), (cfg.data.std,))])
    ds = datasets.MNIST(cfg.data.root, train=True, download=False, transform=tf)
    if limit:
        ds = torch.utils.data.Subset(ds, range(limit))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    opt = make_optimizer(model, cfg.train)  # the recipe as tinycnn trains it: only the data differ
    start = time.perf_counter()
    model.train()
    correct = 0
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=cfg.train.label_smoothing)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg.train, step, len(loader), len(loader))
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct += (out.argmax(1) == y).sum().item()
    _sync(device)
    return time.perf_counter() - start, correct / len(ds)


def tinycnn_way(cfg, device="cpu"):
    """Loading included: tinycnn pays it once per run, the paper's loader pays it per batch."""
    start = time.perf_counter()
    data = load_data(cfg.data, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(torch.device(device))
    result = train(model, data, cfg.train, cfg.seed)
    _sync(device)
    return time.perf_counter() - start, result["train_acc"]


def peak_rss_mb(argv, env) -> float:
    """Peak resident memory of one child process (os.wait4 gives that child's own rusage)."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr.read().decode()}")
    return usage.ru_maxrss / 1024  # Linux reports KiB


THREAD_SETTINGS = ("null", "1", "auto")  # torch's default (tinycnn's before auto), one, the rule


def _train_seconds(setting: str, limit, out: Path) -> tuple[float, int]:
    """(training seconds, threads used) of one `python run.py model=paper threads=SETTING`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    argv = [sys.executable, "run.py", "model=paper", f"threads={setting}", f"hydra.run.dir={out}"]
    if limit:
        argv.append(f"data.limit={limit}")
    p = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    m = read_metrics(out)
    return m["seconds"], m["worker"]["threads"]


def threads_table(limit, repeat: int) -> None:
    """The threads rule measured: each setting on this machine as it is, then next to one busy
    single-thread process (a Python loop: one core taken, as by another 1-thread training)."""
    import tempfile
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; "
          f"model=paper{f', data.limit={limit}' if limit else ''}, median of {repeat}")
    print("| load | threads setting | threads used | training s | ratio to threads=1 |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("idle", "one busy 1-thread process"):
            busy = None
            if load != "idle":
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)  # running before the measured run starts
            try:
                times = {}
                for k in range(repeat):
                    for setting in THREAD_SETTINGS:
                        out = Path(tmp) / f"{len(times)}-{k}-{setting}"
                        times.setdefault(setting, []).append(_train_seconds(setting, limit, out))
                one = statistics.median(t for t, _ in times["1"])
                for setting in THREAD_SETTINGS:
                    sec = statistics.median(t for t, _ in times[setting])
                    used = "/".join(sorted({str(n) for _, n in times[setting]}))
                    print(f"| {load} | {setting} | {used} | {sec:.1f} | {sec / one:.2f} |",
                          flush=True)
            finally:
                if busy is not None:
                    busy.terminate()
                    busy.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tinycnn.bench", description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=None,
                    help="train on the first N images only (quick check; default: all 60,000)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time both pipelines N times, alternating; report the medians")
    ap.add_argument("--skip-memory", action="store_true", help="only time the two pipelines")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default) or cuda[:N]: where both pipelines train")
    ap.add_argument("--threads", action="store_true",
                    help="time the threads settings (null, 1, auto) idle and next to a busy core")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=paper train.lr=0.001")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: expected a whole number >= 1")
    if args.threads:
        return threads_table(args.limit, args.repeat)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        # Same images for both: all 60,000 training images (val_size=0), as the paper trains.
        over = ["data.val_size=0", "train.evals_per_epoch=0", *args.overrides]
        if args.limit:
            over.append(f"data.limit={args.limit}")
        cfg = compose("config", overrides=over)
    gpu = (f", {torch.cuda.get_device_name(args.device)}"
           if torch.device(args.device).type == "cuda" else "")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"device {args.device}{gpu}; load average {os.getloadavg()[0]:.1f}")
    papers, ours = [], []
    for k in range(args.repeat):
        t_paper, acc_paper = paper_way(cfg, args.limit, args.device)
        t_ours, acc_ours = tinycnn_way(cfg, args.device)
        papers.append(t_paper)
        ours.append(t_ours)
        if args.repeat > 1:
            print(f"  {k + 1}/{args.repeat}: paper's {t_paper:.2f} s, tinycnn's {t_ours:.2f} s, "
                  f"ratio {t_ours / t_paper:.2f}", flush=True)
    t_paper, t_ours = statistics.median(papers), statistics.median(ours)
    of = f"median of {args.repeat}, " if args.repeat > 1 else ""
    print(f"paper's pipeline   : {t_paper:6.2f} s  ({of}train acc {acc_paper:.4f})")
    print(f"tinycnn's pipeline : {t_ours:6.2f} s  ({of}train acc {acc_ours:.4f}, loading "
          "included)")
    print(f"ratio tinycnn/paper: {t_ours / t_paper:.2f}  (target <= 0.75; goal <= 0.5)")
    if args.skip_memory:
        return
    env = dict(os.environ)
    base = peak_rss_mb([sys.executable, "-c",
                        "import torch, torchvision, hydra, optuna"], env)
    run = peak_rss_mb([sys.executable, "run.py", "model=paper",
                       f"hydra.run.dir={REPO}/outputs/bench/run"], env)
    print(f"peak RSS, importing torch+torchvision+hydra+optuna: {base:6.0f} MB")
    print(f"peak RSS, python run.py model=paper              : {run:6.0f} MB")
    print(f"difference: {run - base:.0f} MB  (target <= 300 MB)")


if __name__ == "__main__":
    main()
