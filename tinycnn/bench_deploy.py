"""Benchmark: the shipped presets as a device sees them. For paper, best25k, best5k, best5k_r2
and mcu: parameters, MACs, peak activation and flash bytes (int8, tinycnn/costs.py), float and
int8 test accuracy, the int8 ONNX file's size, and the latency per image of torch (1 thread,
batch 1) and of onnxruntime's float and int8 models.

    python -m tinycnn.bench_deploy [--presets paper,best5k] [--out outputs/bench_deploy]

Each preset is trained once (seed 0, threads=1, the full training split, its own epochs) into
OUT/NAME and reused by later calls; then `tinycnn deploy --int8` runs on it (needs the deploy
extra).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tinycnn.record import METRICS, read_deploy, read_metrics

REPO = Path(__file__).resolve().parent.parent
PRESETS = ("paper", "best25k", "best5k", "best5k_r2", "mcu")


def _trained(name: str, out: Path) -> Path:
    """OUT/NAME holding a complete run of the preset; trained now when it does not."""
    run_dir = out / name
    if read_metrics(run_dir).get("status") == "complete":
        return run_dir
    preset = "model=paper" if name == "paper" else f"+experiment={name}"
    p = subprocess.run([sys.executable, str(REPO / "run.py"), preset, "seed=0", "threads=1",
                        f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"training {name} failed:\n{p.stderr[-2000:]}")
    return run_dir


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tinycnn.bench_deploy", description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presets", default=",".join(PRESETS),
                    help=f"comma-separated (default: {','.join(PRESETS)})")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_deploy",
                    help="where the trained runs are kept (default: outputs/bench_deploy)")
    args = ap.parse_args(argv)
    from tinycnn.deploy import deploy, need_extra
    from tinycnn.errors import TinycnnError
    try:
        need_extra()
    except TinycnnError as exc:
        raise SystemExit(str(exc)) from None
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; latency: batch 1, one "
          "thread, median of 200 after 20 warm-up calls")
    print("| preset | params | MACs | peak KB | flash KB | float test % | int8 test % | "
          "int8 .onnx bytes | torch µs | ort float µs | ort int8 µs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.presets.split(","):
        run_dir = _trained(name, args.out)
        d = read_deploy(run_dir)
        if "int8" not in d:
            d = deploy(run_dir, int8=True)
        m = read_metrics(run_dir)
        if "macs" not in m:
            raise SystemExit(f"{run_dir / METRICS} has no costs: remove {run_dir} to retrain")
        f, q = d["float"], d["int8"]
        print(f"| {name} | {m['params']:,} | {m['macs']:,} | {m['peak_bytes'] / 1000:.1f} | "
              f"{m['flash_bytes'] / 1000:.1f} | {100 * f['test_acc']:.2f} | "
              f"{100 * q['test_acc']:.2f} | {q['file_bytes']:,} | "
              f"{d['torch_latency_us']['median']:.0f} | {f['latency_us']['median']:.0f} | "
              f"{q['latency_us']['median']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
