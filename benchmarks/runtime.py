"""Image-encoder runtimes × precisions: speed and agreement with torch fp32, in one run.

    python benchmarks/runtime.py            # 64 calibration + 128 check photos, 5 rounds
    python benchmarks/runtime.py --quick    # 16 + 32 photos, 3 rounds

Model: open_clip ViT-B-32 with random weights (seed 0, built from its config, no download).
Baseline: torch fp32 `encode_pixels`, measured in the same rounds as every other row.
Each round encodes one batch of 32 preprocessed photos with every candidate in turn
(interleaved, so machine noise hits all alike); the table shows the best round and the
range, plus process CPU seconds per image (steadier than wall time on a shared machine).
Agreement columns are the accuracy gate's figures on the check photos (disjoint from the
int8 calibration photos): min per-image cosine to torch fp32 and mean top-10 neighbour
overlap for 32 caption queries and for every check photo as an image query.
Text-query ms: one caption through the torch text tower at that precision (text queries
always run on torch), best of the rounds.

ONNX Runtime rows (fp32, and int8 by dynamic quantization of the weights) are measured when
``onnx`` and ``onnxruntime`` are installed (``--no-onnxruntime`` skips them): they are the
evidence for which runtimes clipsearch ships (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import OUT, checkpoint
from photos import photo_set


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def preprocess_all(encoder, photos: list[Path]) -> np.ndarray:
    from clipsearch.media import load_image

    return np.stack([encoder.preprocess(load_image(p, min_side=224).image) for p in photos])


def onnxruntime_rows(fp32, folder: Path, threads: int) -> dict[str, Callable]:
    """ONNX Runtime encoders of the fp32 image tower: fp32, and int8 weights by
    ``quantize_dynamic`` (activations quantized per batch at run time). Export and
    quantization times are printed. Empty when onnx / onnxruntime are missing."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        print(f"ONNX Runtime rows skipped: {e}")
        return {}
    import warnings

    import torch

    from clipsearch.models.base import l2_normalize

    class ImageTower(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(x)

    folder.mkdir(parents=True, exist_ok=True)
    fp32_path, int8_path = folder / "image-tower-fp32.onnx", folder / "image-tower-int8.onnx"
    h, w = fp32.image_size
    t0 = time.perf_counter()
    # The tracer cannot export torch's fused inference attention: take the plain path.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ImageTower(fp32.model).eval(),
            (torch.zeros(2, 3, h, w),),
            str(fp32_path),
            dynamo=False,
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}},
            opset_version=17,
        )
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    quantize_s = time.perf_counter() - t0
    print(
        f"ONNX export {export_s:.1f} s, ONNX Runtime dynamic int8 quantization {quantize_s:.1f} s"
    )

    def session(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x: l2_normalize(sess.run(None, {"pixels": x.astype(np.float32)})[0])

    return {"onnxruntime fp32": session(fp32_path), "onnxruntime int8 dynamic": session(int8_path)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-onnxruntime", action="store_true", help="skip the ONNX Runtime rows")
    args = ap.parse_args(argv)
    n_calib, n_check = (16, 32) if args.quick else (64, 128)
    rounds = args.rounds or (3 if args.quick else 5)

    import torch

    from clipsearch.models import cpu_has_native_bf16, load_encoder
    from clipsearch.models import openvino_encoder as ovx
    from clipsearch.models.agreement import measure_agreement
    from clipsearch.models.precision import cpu_int8_dot_product
    from clipsearch.search.banks import default_captions

    int8_dot = cpu_int8_dot_product()
    print(
        f"load average at start: {load_avg()}; {torch.get_num_threads()} torch threads; "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
        f"{'yes' if cpu_has_native_bf16() else 'no'}, int8 dot product "
        f"{', '.join(int8_dot) if int8_dot else 'none (no VNNI/AMX)'}"
    )
    photos = photo_set(OUT / "photos", n_calib + n_check, [(1920, 1080), (4000, 3000)])
    ckpt = checkpoint()
    fp32 = load_encoder(str(ckpt), precision="fp32")
    pixels = preprocess_all(fp32, photos)
    calib, check = pixels[:n_calib], pixels[n_calib:]
    batch = check[: args.batch]
    captions = default_captions()[:: max(1, len(default_captions()) // 32)][:32]

    t0 = time.perf_counter()
    ov_fp32_model = ovx.export_image_tower(fp32)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ov_int8_model = ovx.quantize_int8(ov_fp32_model, calib)
    quantize_s = time.perf_counter() - t0
    print(
        f"OpenVINO export {export_s:.1f} s, NNCF int8 quantization ({n_calib} photos) {quantize_s:.1f} s"
    )

    rows: dict[str, tuple[str, str, Callable[[np.ndarray], np.ndarray], object]] = {
        "torch fp32": ("torch", "fp32", fp32.encode_pixels, fp32),
    }
    native_bf16 = cpu_has_native_bf16()
    if native_bf16:
        bf16 = load_encoder(str(ckpt), precision="bf16")
        rows["torch bf16"] = ("torch", "bf16", bf16.encode_pixels, bf16)
    # 1 request over every core (LATENCY) vs 2 in flight (one per core here), fp32 and int8:
    # the measurement behind `requests_in_flight` (the encoder's default)
    variants = [
        ("fp32", ov_fp32_model, "fp32", 1),
        ("fp32", ov_fp32_model, "fp32", 2),
        ("int8", ov_int8_model, "fp32", 1),
        ("int8", ov_int8_model, "fp32", 2),
    ]
    if native_bf16:
        variants += [("bf16", ov_fp32_model, "bf16", 1), ("int8", ov_int8_model, "bf16", 1)]
    for precision, model, inference, streams in variants:
        enc = ovx.OpenVinoImageEncoder(
            fp32, model, precision=precision, inference_precision=inference, streams=streams
        )
        name = f"openvino {precision}" + (
            f" (+{inference} ops)" if precision == "int8" and inference != "fp32" else ""
        )
        name += ", 1 request (LATENCY)" if streams == 1 else f", {streams} requests in flight"
        rows[name] = (
            "openvino",
            precision,
            enc.encode_pixels,
            rows["torch bf16"][3] if inference == "bf16" and native_bf16 else fp32,
        )
    if not args.no_onnxruntime:
        ort_rows = onnxruntime_rows(fp32, OUT / "onnx", torch.get_num_threads())
        for name, fn in ort_rows.items():
            rows[name] = ("onnxruntime", name.split()[1], fn, fp32)

    for fn in (r[2] for r in rows.values()):
        fn(batch[:4])  # warm-up (first-inference allocations)
    wall: dict[str, list[float]] = {k: [] for k in rows}
    cpu: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(rounds):
        for name, (_, _, fn, _) in rows.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn(batch)
            wall[name].append(len(batch) / (time.perf_counter() - t0))
            cpu[name].append((time.process_time() - c0) / len(batch))

    text_ms: dict[str, float] = {}
    for prec, enc in {
        "fp32": fp32,
        **({"bf16": rows["torch bf16"][3]} if native_bf16 else {}),
    }.items():
        enc.encode_texts(["warm up"])
        best = 1e9
        for i in range(max(rounds, 5)):
            t0 = time.perf_counter()
            enc.encode_texts([captions[i % len(captions)]])
            best = min(best, time.perf_counter() - t0)
        text_ms[prec] = best * 1000

    ref = fp32.encode_pixels(check)
    texts = fp32.encode_texts(captions)
    base = max(wall["torch fp32"])
    print(
        f"\nbatch {len(batch)} photos, {rounds} interleaved rounds; load average at end: {load_avg()}\n"
    )
    head = (
        "runtime",
        "img/s best",
        "range",
        "× torch fp32",
        "CPU ms/img",
        "text ms",
        "min cos",
        "text top-10",
        "image top-10",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, (_, _, fn, text_enc) in rows.items():
        gate = measure_agreement(ref, fn(check), texts, calibration_images=n_calib)
        text_prec = getattr(text_enc, "precision", "fp32")
        print(
            f"| {name} | {max(wall[name]):.1f} | {min(wall[name]):.1f}–{max(wall[name]):.1f} | "
            f"{max(wall[name]) / base:.2f}× | {1000 * min(cpu[name]):.0f} | {text_ms[text_prec]:.0f} | "
            f"{gate.min_cosine:.4f} | {gate.text_overlap:.3f} | {gate.image_overlap:.3f} |"
        )
    print(
        f"\nCPU: torch capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
        f"{'yes' if native_bf16 else 'no'}, int8 dot product {', '.join(int8_dot) or 'none'}. "
        "Gate thresholds: min cos ≥ 0.99, overlap ≥ 0.9. Target: int8 ≥ 4× torch fp32."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
