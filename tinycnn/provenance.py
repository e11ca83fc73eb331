"""Where and with what a run ran, for its record: library versions, the code's commit, the
machine (two CPU kernel sets give different last digits, so reproduce names them)."""

import platform
import subprocess
from importlib import metadata
from pathlib import Path


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("tinycnn", "torch", "torchvision", "hydra-core", "omegaconf", "optuna", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine(device) -> dict:
    """Where a run trained: the processor, the instruction set torch's CPU kernels use (AVX2,
    AVX512, ...: two such sets give different last bits, so different numbers after an epoch),
    and the GPU when it trained on one."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu, "cpu_kernels": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def code_version() -> str | None:
    """The git commit of tinycnn's own checkout ("+changes" when its files differ from it), or
    None when tinycnn is not run from a git checkout."""
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
