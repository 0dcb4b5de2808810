"""`vwwfast export`: a run's student as the files a device runs, each measured on val.

RUN/export/
    model.onnx          float32, NCHW [B, 3, S, S] normalised RGB, dynamic batch (onnxruntime)
    model-int8.onnx     static int8, QDQ, per-channel weights, calibrated on the run's views
    model.tflite        float32, NHWC [1, S, S, 3] RGB pixels 0..255 (--format tflite)
    model-int8.tflite   full-integer int8 for TensorFlow Lite Micro: int8 in (pixel - 128), int8 out
    export.json         per file: path, bytes (size_bytes), the estimated int8 activation
                        peak (peak_activation_bytes, footprint.py), val accuracy, recall per
                        class, confusion; the PyTorch model's figures (params, MACs); the
                        quantization settings

Every file is written to a staging folder first; --max-flash / --max-ram are checked on it
(flash: the size of each int8 file, or of each float file with --no-int8; RAM: its
estimated activation peak), and a file over budget ends the export in one line, before
anything is written to the output folder.

Every file is scored by `evaluate` through the loader `vwwfast eval` uses, on the same val
view, so export.json and `vwwfast eval FILE` agree. int8 is calibrated on training views
rendered exactly as training rendered them (the run's own view parameters and renderer).
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.deploy.predictors import META_KEY, cpu_copy
from vwwfast.errors import UserError
from vwwfast.files import write_atomic
from vwwfast.provenance import __version__

FORMATS = ("onnx", "tflite")
INPUT, OUTPUT = "input", "logits"
DROP_WARN = 0.01       # int8 accuracy loss (1 point) that gets a loud warning
CALIB_SEED = 0
WHAT_HELPS = ("more calibration views (--calib 2048); per-channel weights (on for ONNX and "
              "TFLite); a student without squeeze-excite / hard-swish (e.g. a ReLU MobileNet); "
              "quantization-aware fine-tuning (not in vwwfast yet)")


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"--format {text!r}: use a comma-separated list of {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def model_meta(ckpt: dict, checkpoint: Path, run, shards: str) -> dict:
    """What a runtime needs to feed the file (and `vwwfast eval` to score it)."""
    return {"format": "vwwfast-export", "vwwfast_version": __version__, "arch": ckpt["arch"],
            "width": float(ckpt.get("width") or 1.0), "input_size": ckpt["input_size"], "classes": list(ckpt.get("classes") or []),
            "normalization": ckpt["normalization"], "checkpoint": str(checkpoint),
            "run": run.id if run else ckpt.get("run"), "shards": shards}


# ---------------------------------------------------------------------------------------
# ONNX

def export_onnx(model: torch.nn.Module, path: Path, meta: dict) -> None:
    """Float32 ONNX through torch.onnx's exporter (torch.export based), batch dimension dynamic,
    the normalisation and layout written into the model's metadata."""
    import onnx
    size = meta["input_size"]
    model = cpu_copy(model)
    x = torch.randn(2, 3, size, size)  # batch 2: torch.export specialises a batch of 1
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(model, (x,), str(raw), input_names=[INPUT], output_names=[OUTPUT],
                          dynamo=True, external_data=False, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
        proto = onnx.load(str(raw))
    set_onnx_meta(proto, meta, layout="NCHW")
    write_atomic(path, proto.SerializeToString())


def set_onnx_meta(proto, meta: dict, layout: str) -> None:
    mean, std = meta["normalization"]["mean"], meta["normalization"]["std"]
    props = {META_KEY: json.dumps({**meta, "layout": layout}),
             "input": f"{INPUT}: float32 {layout} [batch, 3, {meta['input_size']}, "
                      f"{meta['input_size']}], RGB",
             "normalization": f"x = (pixel / 255 - mean) / std per channel, mean {mean}, std {std}",
             "output": f"{OUTPUT}: float32 [batch, 2], classes {meta['classes']}"}
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name, proto.producer_version = "vwwfast", __version__


def onnx_settings() -> dict:
    from importlib.metadata import version
    return {"tool": f"onnxruntime {version('onnxruntime')} quantize_static", "format": "QDQ",
            "weights": "int8, symmetric, per channel", "activations": "uint8, per tensor",
            "calibration": "MinMax (min and max over every calibration view)"}


def quantize_onnx(float_path: Path, path: Path, calib: np.ndarray, meta: dict) -> None:
    """Static int8 with onnxruntime: QDQ, per-channel int8 weights, uint8 activations
    (about 6x faster than int8 activations on an x86 CPU), MinMax ranges over `calib`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):  # 64 views per batch bound the memory of the augmented model
            self.batches = iter(np.array_split(calib, max(1, len(calib) // 64)))

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {INPUT: np.ascontiguousarray(x, dtype=np.float32)}

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-int8-") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        quant_pre_process(str(float_path), str(pre))
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(q))
    set_onnx_meta(proto, meta, layout="NCHW")
    write_atomic(path, proto.SerializeToString())


# ---------------------------------------------------------------------------------------
# Calibration views

def calibration_views(shards, config: dict, n: int, device, size: int) -> np.ndarray:
    """`n` training views [n, 3, size, size] (normalised, float32), rendered as the run
    rendered them: its view parameters of epoch 1 (then 2, ... when n exceeds the split),
    its renderer settings, a seeded choice of the samples it trained on (its --train-limit
    subset, if any; never its --holdout). Mixed views (mixup / cutmix) are calibrated unmixed: the deployed
    model sees single images, not blends."""
    from vwwfast.data.epochs import training_samples
    from vwwfast.data.mixing import unmixed
    from vwwfast.data.split import SplitData
    from vwwfast.teach.teacher import run_train_views
    # the run's render settings; one recorded before a setting existed has its default
    how = C.RenderSettings(**{k: config[k] for k in C.RENDER_FIELDS if config.get(k) is not None})
    data = SplitData(shards, "train", how, device, size)
    rng = np.random.default_rng(CALIB_SEED)
    chunks, epoch, left = [], 1, n
    try:
        # the samples the run trained on, as train/inputs.py drew them
        pool, _ = training_samples(
            len(data), holdout=config.get("holdout"), holdout_seed=config.get("holdout_seed"),
            limit=config.get("train_limit"), limit_seed=config.get("train_limit_seed"),
            seed=config.get("seed", 0))
        while left > 0:
            params = unmixed(run_train_views(config, data.split, epoch))
            if len(params) != len(data):
                raise UserError(f"the run's training views are for {len(params)} samples, "
                                f"{shards.root} has {len(data)}: export with the run's shards")
            idx = np.sort(pool[rng.permutation(len(pool))[:left]])  # samples the run trained on
            for x, _, _ in data.batches(idx, params, 256):
                chunks.append(x.float().cpu().numpy())
            left -= len(idx)
            epoch += 1
    finally:
        data.close()
    return np.ascontiguousarray(np.concatenate(chunks))


# ---------------------------------------------------------------------------------------
# The command

def export_command(cfg: C.ExportConfig) -> dict:
    from vwwfast.data.split import SplitData
    from vwwfast.deploy.evaluate import open_shards, resolve_model_ref
    from vwwfast.devices import resolve_device
    from vwwfast.models import model_from_checkpoint
    from vwwfast.progress import info
    from vwwfast.train.evaluate import evaluate

    formats = _checked_formats(cfg)
    ref = resolve_model_ref(cfg.run, cfg.runs_dir)
    if ref.kind != "checkpoint":
        raise UserError(f"{cfg.run} is already an exported file; export takes a run folder, "
                        f"a short id or a checkpoint (.pt)")
    device = resolve_device(cfg.device)
    model, ckpt = model_from_checkpoint(ref.path, device=device)
    config = ckpt.get("config") or (ref.run.config if ref.run else {})
    shards_path = cfg.shards or config.get("shards")
    shards = open_shards(shards_path, given=bool(cfg.shards), what=str(ref.path))
    assert shards_path, "open_shards refuses a run without shards"
    size = ckpt["input_size"]
    out = Path(cfg.out) if cfg.out else (ref.run.path if ref.run else ref.path.parent) / "export"
    meta = model_meta(ckpt, ref.path.resolve(), ref.run, str(Path(shards_path).resolve()))
    center_crop = bool(config.get("val_center_crop", False))

    calib = None
    if cfg.int8:
        info(f"calibration: {cfg.calib} training views at {size} px, rendered as the run rendered them")
        calib = calibration_views(shards, config, cfg.calib, device, size)
    written = _write_files(cfg, formats, model, meta, calib, out)
    val = SplitData(shards, "val", cfg, device, size)
    from vwwfast.footprint import count_macs, count_params
    report = {"format": "vwwfast-export-report", "vwwfast_version": __version__,
              "created": datetime.now().isoformat(timespec="seconds"),
              "run": meta["run"], "checkpoint": meta["checkpoint"], "arch": ckpt["arch"],
              "width": meta["width"], "input_size": size, "params": count_params(model),
              "macs": count_macs(model, size), "normalization": ckpt["normalization"],
              "shards": meta["shards"], "shards_content_hash": shards.content_hash,
              "split": "val", "center_crop": center_crop, "batch_size": cfg.batch_size,
              "budgets": {"max_flash": cfg.max_flash, "max_ram": cfg.max_ram}}
    try:
        float_m = evaluate(model, val, cfg.batch_size, center_crop, outputs=True)
        report["float"] = {"file": ref.path.name, "format": "pytorch", "precision": "float32",
                           "path": meta["checkpoint"], "bytes": ref.path.stat().st_size, **_metrics(float_m)}
        report["files"] = _score_files(cfg, written, out, val, float_m, center_crop, device)
    finally:
        val.close()
    report["quantization"] = _quantization(cfg, calib, formats)
    report["warnings"] = _warnings(report)
    write_atomic(out / "export.json", (json.dumps(report, indent=1) + "\n").encode())
    _print(report, out)
    if ref.run is not None and out.resolve() == (ref.run.path / "export").resolve():
        from vwwfast.records.report import write_report
        write_report(ref.run)  # the card's Export section reads RUN/export/export.json
    return report


def _checked_formats(cfg: C.ExportConfig) -> list[str]:
    """The formats asked for, refused in one line before any work where they cannot be made."""
    C.require(cfg, "run")
    formats = parse_formats(cfg.format)
    if cfg.qat_epochs:
        raise UserError("--qat-epochs is not implemented yet; export without it and read the "
                        "int8 accuracy in export.json (docs/EXPORT.md says what helps)")
    if "tflite" in formats:
        from vwwfast.deploy.predictors import require_tflite
        require_tflite()
    return formats


def _score_files(cfg: C.ExportConfig, written: dict, out: Path, val, float_m: dict,
                 center_crop: bool, device) -> dict[str, dict]:
    """Each written file scored on val with the checkpoint's eval, against the float model."""
    from vwwfast.deploy.predictors import load_model
    from vwwfast.train.evaluate import evaluate
    files: dict[str, dict] = {}
    for name, (fmt, precision, figures) in written.items():
        path = out / name
        loaded = load_model(path, device)
        m = evaluate(loaded.predict, val, cfg.batch_size, center_crop, outputs=True)
        same = m["preds"] == float_m["preds"]  # the same samples in the same order
        files[name] = {"file": name, "format": fmt, "precision": precision, "path": str(path.resolve()),
                       "bytes": path.stat().st_size, **figures, **_metrics(m),
                       "drop_vs_float": _drop(float_m, m),
                       "agreement_with_float": float(same.mean()) if len(same) else None}
    return files


def _quantization(cfg: C.ExportConfig, calib, formats: list[str]) -> dict | None:
    """How the int8 files were calibrated; None without --int8."""
    if not cfg.int8:
        return None
    assert calib is not None, "--int8 renders the calibration views"
    tflite_settings = {}
    if "tflite" in formats:
        from vwwfast.deploy import tflite
        tflite_settings = {"tflite": tflite.settings()}
    return {"calibration_views": int(len(calib)), "calibration_seed": CALIB_SEED,
            "calibration_source": "the run's training views (epoch 1, then 2, ...), rendered with "
                                  "its renderer settings",
            **({"onnx": onnx_settings()} if "onnx" in formats else {}), **tflite_settings}


def _write_files(cfg, formats: list[str], model, meta: dict, calib, out: Path) -> dict:
    """Every file of the export, made in a staging folder beside `out`, measured (size,
    estimated activation peak) and checked against the budgets; moved into `out` only when
    every one fits. name -> (format, precision, figures)."""
    import shutil
    from vwwfast.footprint import file_peak_bytes
    from vwwfast.progress import info
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-staging-"))
    made: dict[str, tuple] = {}
    try:
        if "onnx" in formats:
            info("ONNX: exporting" + (", then int8" if cfg.int8 else "") + " (moved into the output "
                 "folder once every file fits its budget)")
            export_onnx(model, staging / "model.onnx", meta)
            made["model.onnx"] = ("onnx", "float32")
            if cfg.int8:
                quantize_onnx(staging / "model.onnx", staging / "model-int8.onnx", calib, meta)
                made["model-int8.onnx"] = ("onnx", "int8")
        if "tflite" in formats:
            from vwwfast.deploy import tflite
            info("TFLite: converting" + (", then int8" if cfg.int8 else ""))
            float_bytes = tflite.convert_float(model, meta)
            tflite.write(float_bytes, staging / "model.tflite", meta)
            made["model.tflite"] = ("tflite", "float32")
            if cfg.int8:
                tflite.write(tflite.quantize_int8(float_bytes, calib, meta),
                             staging / "model-int8.tflite", meta)
                made["model-int8.tflite"] = ("tflite", "int8")
        written = {name: (fmt, precision, {
            "size_bytes": (staging / name).stat().st_size,
            "peak_activation_bytes": file_peak_bytes(staging / name)})
            for name, (fmt, precision) in made.items()}
        check_file_budgets(cfg, written, int8=cfg.int8)
        out.mkdir(parents=True, exist_ok=True)
        for name in written:
            shutil.move(str(staging / name), str(out / name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def check_file_budgets(cfg, written: dict, int8: bool) -> None:
    """--max-flash and --max-ram on the files a device would run: the int8 ones (the float
    ones with --no-int8). One line naming the first figure over its budget, and by how much."""
    from vwwfast.footprint import check_budget
    for name, (_, precision, figures) in written.items():
        if (precision == "int8") != int8:
            continue
        check_budget("--max-flash", cfg.max_flash, figures["size_bytes"], f"{name}: file size")
        check_budget("--max-ram", cfg.max_ram, figures["peak_activation_bytes"],
                     f"{name}: int8 activation peak (estimate)")


def _metrics(m: dict) -> dict:
    return {k: m[k] for k in ("acc", "recall_0", "recall_1", "confusion", "n")}


def _drop(float_m: dict, m: dict):
    """Accuracy lost against the PyTorch model, in points (positive = worse)."""
    if float_m["acc"] is None or m["acc"] is None:
        return None
    return round(100 * (float_m["acc"] - m["acc"]), 4)


def _warnings(report: dict) -> list[str]:
    out = []
    for f in report["files"].values():
        drop = f["drop_vs_float"]
        if f["precision"] == "int8" and drop is not None and drop > 100 * DROP_WARN:
            out.append(f"{f['file']} loses {drop:.1f} points of val accuracy against the float "
                       f"model ({f['acc']:.4f} vs {report['float']['acc']:.4f}). What helps: "
                       f"{WHAT_HELPS}.")
    return out


def _print(report: dict, folder: Path) -> None:
    from vwwfast.deploy.evaluate import fmt_metric
    from vwwfast.progress import console, out, table
    rows = []
    for f in [report["float"], *report["files"].values()]:
        drop, agree = f.get("drop_vs_float"), f.get("agreement_with_float")
        peak = f.get("peak_activation_bytes")
        rows.append((f["file"], f"{f['bytes'] / 1000:,.1f}", "-" if peak is None else f"{peak / 1000:,.1f}",
                     fmt_metric(f["acc"], 4),
                     "-" if drop is None else f"{0.0 - drop:+.2f}",
                     "-" if agree is None else f"{agree:.1%}",
                     f"{fmt_metric(f['recall_0'])} / {fmt_metric(f['recall_1'])}"))
    t = table(f"export of {report['run'] or report['checkpoint']}, val {report['float']['n']} images "
              f"(vs float: points of accuracy; agrees: same call as the float model)",
              ["file", "KB", "RAM KB (est.)", "val acc", "vs float", "agrees", "recall no-person / person"], rows)
    t.columns[0].no_wrap = True
    out.print(t)
    print(f"written: {folder / 'export.json'}")
    for w in report["warnings"]:
        console.print(f"[bold red]WARNING:[/bold red] {w}")
