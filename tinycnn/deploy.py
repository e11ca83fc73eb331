"""`tinycnn deploy RUN_DIR [--int8]`: a trained run as an ONNX model that something small can run,
checked against torch, optionally quantised to int8 and measured.

- BatchNorm is folded into the convolution (or linear layer) before it. A network that normalises
  with batch statistics (the paper's `running_stats: false`) computes another function at batch 1
  than in batches of 1,000, and cannot be folded: its running statistics are first re-estimated
  on training images (its float accuracy at batch 1 before and after is recorded).
- model.onnx must give torch's logits within 1e-4 on the test images checked, or nothing is kept.
- --int8: onnxruntime's static quantisation (QDQ, per-channel weights), calibrated on training
  images only, never on validation or test images; int8 accuracy beside the float one.
- Latency in onnxruntime at batch 1 on one thread (median and p90 after a warm-up), file sizes and
  the bytes of stored numbers, all in deploy.json in the run folder.
"""

import logging
import statistics
import time
from pathlib import Path

from omegaconf import OmegaConf

from tinycnn.errors import TinycnnError
from tinycnn.record import CONFIG, DEPLOY, WEIGHTS, load_checkpoint, load_config, \
    write_json_atomic

PARITY_TOL = 1e-4   # largest |onnxruntime - torch| logit accepted
WARMUP, RUNS = 20, 200  # latency: calls before timing, timed calls (batch 1, one thread)
OPSET = 18  # torch.onnx's exporter (torch.export based) writes 18 and up


def need_extra():
    """onnx and onnxruntime, or one line saying which extra to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise TinycnnError(f"tinycnn deploy needs onnx and onnxruntime ({exc.name} is not "
                           "installed): pip install -e \".[deploy]\"") from None


def _data(run_dir: Path, data_root):
    """The run's own data set and split, every image (limit and test_limit as recorded)."""
    from tinycnn.data import load_data, root_here
    from tinycnn.schema import complete
    cfg = load_config(run_dir / CONFIG)
    if cfg is None:
        raise TinycnnError(f"{run_dir} has no config.yaml: deploy needs the run's data settings.")
    cfg = complete(OmegaConf.create({k: cfg[k] for k in ("data", "train") if k in cfg}))
    if data_root is not None:
        cfg.data.root = str(data_root)
    elif here := root_here(cfg.data.root):
        cfg.data.root = here
    return cfg, load_data(cfg.data)


def accuracy(predict, data, x, y, batch: int) -> float:
    """Accuracy of predict(normalised float batch) -> logits, in fixed-order batches."""
    import torch
    correct = 0
    for i in range(0, len(x), batch):
        logits = torch.as_tensor(predict(data.normalise(x[i:i + batch])))
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / max(len(x), 1)


def with_running_stats(model, model_cfg: dict, images, batch: int):
    """The same weights in a network whose BatchNorms keep running statistics, estimated over
    `images` (already normalised batches: a cumulative average, momentum None)."""
    import torch

    from tinycnn.model import build_model
    fixed = build_model({**model_cfg, "running_stats": True})
    missing = fixed.load_state_dict(model.state_dict(), strict=False).missing_keys
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
               for k in missing), missing
    for m in fixed.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    fixed.train()
    with torch.no_grad():
        for x in images:
            fixed(x)
    return fixed.eval()


def fold_norms(model):
    """Every BatchNorm that follows a conv or linear layer in a Sequential folded into it (the
    norm becomes an Identity): the same function in eval mode, one layer fewer."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
    pairs = ((torch.nn.Conv2d, torch.nn.BatchNorm2d, fuse_conv_bn_eval),
             (torch.nn.Linear, torch.nn.BatchNorm1d, fuse_linear_bn_eval))
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        for i in range(len(seq) - 1):
            for layer, norm, fuse in pairs:
                if isinstance(seq[i], layer) and isinstance(seq[i + 1], norm) \
                        and seq[i + 1].track_running_stats:
                    seq[i] = fuse(seq[i], seq[i + 1])
                    seq[i + 1] = torch.nn.Identity()
    return model


def _stored_bytes(path: Path) -> int:
    """The bytes of the numbers an ONNX file stores (its initializers), not its graph."""
    import onnx
    from onnx import numpy_helper
    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def _session(path: Path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latency_us(call, x) -> dict:
    """Median and p90 of RUNS timed calls at batch 1 after WARMUP, in microseconds."""
    for _ in range(WARMUP):
        call(x)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return {"median": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))],
            "runs": RUNS}


def _file_figures(path: Path, run, x1) -> dict:
    """An ONNX model's file size, the bytes of its stored numbers and its batch-1 latency."""
    return {"file_bytes": path.stat().st_size, "stored_bytes": _stored_bytes(path),
            "latency_us": latency_us(run, x1)}


def _export(model, path: Path, shape) -> None:
    import torch
    x = torch.zeros(1, *shape)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True,
                      external_data=False, verbose=False)


def _quantise(float_path: Path, int8_path: Path, data, n: int, batch: int) -> None:
    """Static QDQ quantisation, per-channel weights, calibrated on the first n training images."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            x = data.train_x[:n]
            self.batches = iter([{"image": data.normalise(x[i:i + batch]).numpy()}
                                 for i in range(0, len(x), batch)])

        def get_next(self):
            return next(self.batches, None)

    logging.disable(logging.WARNING)  # its advice to pre-process, on the root logger, each time
    try:
        quantize_static(str(float_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def deploy(run_dir, int8: bool = False, data_root=None, calibration: int = 1000,
           parity_images: int = 1000) -> dict:
    """Export, check, (quantise,) measure; returns deploy.json's dict, also written there."""
    need_extra()
    from tinycnn.lazy import import_torch
    torch = import_torch()
    from tinycnn.model import build_model
    torch.set_num_threads(1)

    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / WEIGHTS)
    cfg, data = _data(run_dir, data_root)
    batch = int(cfg.train.eval_batch_size)
    model = build_model(ckpt["model"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    out = {"params": model.num_params, "notes": []}
    first = data.test_x[:1]
    shape = tuple(first.shape[1:])
    batch_stats = any(isinstance(m, torch.nn.BatchNorm2d) and not m.track_running_stats
                      for m in model.modules())
    with torch.no_grad():
        if batch_stats:
            n_val = min(len(data.val_x), 1000)
            before = accuracy(model, data, data.val_x[:n_val], data.val_y[:n_val], 1)
            images = [data.normalise(data.train_x[i:i + batch])
                      for i in range(0, min(len(data.train_x), 10 * batch), batch)]
            model = with_running_stats(model, ckpt["model"], images, batch)
            after = accuracy(model, data, data.val_x[:n_val], data.val_y[:n_val], 1)
            out["running_stats"] = {"estimated_on_train_images": sum(len(x) for x in images),
                                    "val_acc_batch1_before": before,
                                    "val_acc_batch1_after": after, "val_images": n_val}
        model = fold_norms(model)
        out["float"] = {"val_acc": accuracy(model, data, data.val_x, data.val_y, batch),
                        "test_acc": accuracy(model, data, data.test_x, data.test_y, batch)}

        onnx_path = run_dir / "model.onnx"
        _export(model, onnx_path, shape)
        session = _session(onnx_path)
        run_onnx = lambda x: session.run(None, {"image": x.numpy()})[0]  # noqa: E731
        xs = data.normalise(data.test_x[:parity_images])
        diff = float((torch.as_tensor(run_onnx(xs)) - model(xs)).abs().max())
        out["parity"] = {"images": len(xs), "max_abs_logit_diff": diff, "tolerance": PARITY_TOL}
        if not diff <= PARITY_TOL:
            onnx_path.unlink()
            raise TinycnnError(f"model.onnx's logits differ from torch's by {diff:.2e} (more than "
                               f"{PARITY_TOL:g}) on {len(xs)} test images; nothing was kept.")
        x1 = data.normalise(first)
        out["float"].update(_file_figures(onnx_path, run_onnx, x1))
        out["torch_latency_us"] = latency_us(model, x1)

        if int8:
            int8_path = run_dir / "model.int8.onnx"
            n = min(calibration, len(data.train_x))
            _quantise(onnx_path, int8_path, data, n, batch)
            q = _session(int8_path)
            run_q = lambda x: q.run(None, {"image": x.numpy()})[0]  # noqa: E731
            out["int8"] = {"calibration_train_images": n,
                           "val_acc": accuracy(run_q, data, data.val_x, data.val_y, batch),
                           "test_acc": accuracy(run_q, data, data.test_x, data.test_y, batch),
                           **_file_figures(int8_path, run_q, x1)}
            if out["int8"]["latency_us"]["median"] > out["float"]["latency_us"]["median"]:
                out["notes"].append(
                    f"on this machine int8 runs slower than float in onnxruntime at batch 1 "
                    f"({out['int8']['latency_us']['median']:.0f} against "
                    f"{out['float']['latency_us']['median']:.0f} µs): a network this small "
                    "spends its time in the quantise/dequantise steps, not in arithmetic")
    write_json_atomic(run_dir / DEPLOY, out)
    return out


def report(out: dict, run_dir) -> str:
    pct = lambda a: f"{100 * a:.2f}%"  # noqa: E731
    f = out["float"]
    lines = [f"{run_dir}/model.onnx: {out['params']:,} params, norms folded; onnxruntime's "
             f"logits within {out['parity']['max_abs_logit_diff']:.1e} of torch's on "
             f"{out['parity']['images']:,} test images"]
    if "running_stats" in out:
        r = out["running_stats"]
        lines.append(f"batch statistics replaced by running statistics estimated on "
                     f"{r['estimated_on_train_images']:,} training images: val accuracy at batch "
                     f"1 {pct(r['val_acc_batch1_before'])} before, "
                     f"{pct(r['val_acc_batch1_after'])} after")

    def model_line(label: str, m: dict) -> str:
        return (f"{label} val {pct(m['val_acc'])}, test {pct(m['test_acc'])}, "
                f"{m['file_bytes']:,} bytes ({m['stored_bytes']:,} of numbers), "
                f"{m['latency_us']['median']:.0f} µs median, {m['latency_us']['p90']:.0f} µs p90")

    lines.append(model_line("float:", f) + f" (batch 1, 1 thread; torch "
                 f"{out['torch_latency_us']['median']:.0f} µs)")
    if "int8" in out:
        lines.append(model_line("int8: ", out["int8"]) + f"; calibrated on "
                     f"{out['int8']['calibration_train_images']:,} training images")
    lines += [f"note: {n}" for n in out["notes"]]
    lines.append(f"written: {run_dir}/deploy.json")
    return "\n".join(lines)
