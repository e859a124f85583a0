"""Deployment latency: our Predictor on each backend and the torch-free runtime (fp32 and int8), measured
alternately in one run, with each path's distance from the machine's float32 FLOP limit.

    effdet-benchmark predict --runtime all [--models efficientdet_d0 ...] [--runs 15] [--threads 2]
    python tools/benchmark.py predict --runtime all --compare-reference    # from a checkout: + the reference

A :class:`Baseline` (another implementation in its own process: ``tools/benchmark.py`` adds the reference
package's DetBenchPredict) is timed in the same rounds, and every path gets its same-round ratio to it.

Every path lives in its own long-running subprocess (its model loaded once); the controller asks each in
turn for one timed call per round (rotating the order), so slow phases of a shared machine hit every path
alike. Before each timed call the controller idles for ``SETTLE_SECONDS``: a runtime's worker threads keep spinning
for a while after a call returns (onnxruntime's intra-op pool, OpenMP), and without the pause they take the cores
from whichever path is timed next (measured: OpenVINO int8 on D0, 56 ms median after onnxruntime workers vs 38 ms
without them). Ratios are medians of the same-round ratios to the baseline. "end to end" is from a 640×480 uint8
image to final boxes in its own pixels (letterbox, normalise, network, decode, NMS, undo letterbox); the
reference baseline gets a ready tensor (no pre-processing), as in ``tools/benchmark.py predict``.

FLOP limit: multiply-adds of the network (``torch.utils.flop_counter`` on the real forward, FLOPs / 2) × 2 ÷
the float32 rate of a large ``torch.matmul`` on the same number of threads. "× limit" = latency ÷ that time.
"""
from __future__ import annotations

import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

from .common import PACKAGE_PARENT, own_pythonpath
from .workers import peak_rss_mib

PATHS = ("torch", "onnxruntime", "openvino", "runtime-onnxruntime", "runtime-openvino", "int8-onnxruntime",
         "int8-openvino")  # --runtime all
OPTIONAL_PATHS = ("runtime-openvino-bf16",)  # only on CPUs with bfloat16 units; asked for by name
DEFAULT_MODELS = ("efficientdet_d0", "efficientdet_lite0", "efficientdet_d1")
SETTLE_SECONDS = 0.2  # idle time before each timed call (see the module doc)
INT8_QUANTIZERS = {"int8-onnxruntime": "onnxruntime", "int8-openvino": "nncf"}  # each runtime's fastest file
DESCRIPTIONS = {
    "torch": "ours, Predictor backend torch",
    "onnxruntime": "ours, Predictor backend onnxruntime",
    "openvino": "ours, Predictor backend openvino",
    "runtime-onnxruntime": "ours, torch-free runtime, onnxruntime, NMS in graph",
    "runtime-openvino": "ours, torch-free runtime, OpenVINO, NMS in graph",
    "runtime-openvino-bf16": "ours, torch-free runtime, OpenVINO bf16, NMS in graph",
    "int8-onnxruntime": "ours, torch-free runtime, onnxruntime, int8 (onnxruntime quantizer)",
    "int8-openvino": "ours, torch-free runtime, OpenVINO, int8 (NNCF quantizer)",
}

# ------------------------------------------------------------------------------------------- workers

# Each worker reports its own peak (see workers.peak_rss_mib, whose source is copied in: a baseline's process, the
# reference's, cannot import this project).
_SERVE_LOOP = "\n" + inspect.getsource(peak_rss_mib) + r"""
import time
print("@@ready", flush=True)
for line in sys.stdin:
    batch = int(line)
    start = time.perf_counter()
    call(batch)
    elapsed = time.perf_counter() - start
    print("@@%r %r" % (elapsed, peak_rss_mib()), flush=True)
"""

_OURS = r"""
import json, sys
spec = json.loads(sys.argv[1])
import numpy as np
if spec["path"].startswith(("runtime-", "int8-")):
    sys.modules["torch"] = None  # the runtime must not need torch
    from effdet.runtime import OnnxDetector
    runner = OnnxDetector(spec["file"], backend=spec["path"].split("-", 1)[1], threads=spec["threads"])
else:
    import torch
    torch.set_num_threads(spec["threads"])
    from effdet.inference.predictor import Predictor
    if spec["path"] == "torch":
        import effdet
        from effdet.modeling.postprocess_settings import PostprocessSettings
        model = effdet.create_model(spec["model"], num_classes=90).eval()
        runner = Predictor(model, [str(i) for i in range(90)], list(range(1, 91)), PostprocessSettings(nms="hard"))
    else:
        runner = Predictor.from_onnx(spec["file"], backend=spec["path"], threads=spec["threads"])
image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
def call(batch):
    runner.predict([image] * batch, batch_size=batch)
"""


class Baseline(NamedTuple):
    """Another implementation timed in the same rounds as ours, in its own process.

    ``code`` defines ``call(batch)`` (one timed call on ``batch`` images) from ``spec``, the JSON of
    ``make_spec(model_name, native_size, threads, batch)`` in ``sys.argv[1]``; it runs with ``pythonpath`` as its
    whole import path, in ``cwd``."""
    name: str
    description: str
    code: str
    make_spec: Callable[[str, list, int, int], dict]
    pythonpath: str
    cwd: str


class Worker:
    """One path in its own process: ``time(batch)`` -> (seconds, peak RSS MiB)."""

    def __init__(self, name: str, code: str, spec: dict, env: dict, cwd: str):
        self.name = name
        self.process = subprocess.Popen([sys.executable, "-W", "ignore", "-c", code + _SERVE_LOOP, json.dumps(spec)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env, cwd=cwd)
        self._expect("@@ready")

    def _expect(self, prefix: str) -> str:
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise RuntimeError(f"benchmark worker '{self.name}' failed:\n{self.process.stderr.read()[-3000:]}")

    def time(self, batch: int) -> tuple[float, float]:
        self.process.stdin.write(f"{batch}\n")
        self.process.stdin.flush()
        seconds, rss = self._expect("@@").split()
        return float(seconds), float(rss)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _env(threads: int, pythonpath: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=pythonpath,
                HF_HUB_OFFLINE="1")


# ------------------------------------------------------------------------------------------ measures


def matmul_flops(threads: int, size: int = 2048, runs: int = 10) -> float:
    """float32 FLOP/s of a ``size``² matmul on ``threads`` threads (median of ``runs``)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * size ** 3 / statistics.median(times)


def multiply_adds(model_name: str) -> tuple[float, list[int]]:
    """(multiply-adds of one forward at the native size, that size)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import effdet

    model = effdet.create_model(model_name, num_classes=90).eval()
    size = list(model.config.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 2.0, size


def export_files(model_name: str, folder: Path, paths: Sequence[str], calibration: Optional[str]) -> dict[str, str]:
    """The ONNX files the paths need: raw (Predictor backends), with NMS (runtime), int8 with NMS (one per
    quantizer: each runtime gets the file placed for it)."""
    import effdet
    from effdet.export.onnx import export_onnx
    from effdet.modeling.postprocess_settings import PostprocessSettings

    model = effdet.create_model(model_name, num_classes=90).eval()
    files: dict[str, str] = {}
    settings = PostprocessSettings(nms="hard")
    if {"onnxruntime", "openvino"} & set(paths):
        files["raw"] = str(folder / f"{model_name}_raw.onnx")
        export_onnx(model, files["raw"], outputs="raw", dynamic_batch=True, settings=settings, verify=False)
    if any(p.startswith(("runtime-", "int8-")) for p in paths):
        files["nms"] = str(folder / f"{model_name}_nms.onnx")
        export_onnx(model, files["nms"], outputs="detections", dynamic_batch=True, settings=settings, verify=False)
    int8_paths = [p for p in paths if p.startswith("int8-")]
    if int8_paths and calibration is None:
        from effdet.data import make_demo_dataset

        calibration = str(Path(make_demo_dataset(folder / "calibration", num_train=16, num_val=2)["root"]) / "train")
    if int8_paths:
        from effdet.export.quantize import quantize_file
    for path in int8_paths:
        files[path] = str(folder / f"{model_name}_{path}.onnx")
        quantize_file(files["nms"], files[path], calibration, max_images=16, quantizer=INT8_QUANTIZERS[path])
    return files


def _cpu_info() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo (``{}`` where there is none)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (``avx2``, ``avx512_bf16``, ``amx_bf16`` ...; empty where unknown)."""
    return set(_cpu_info().get("flags", "").split())


def cpu_features() -> str:
    """The CPU model and the instruction sets that decide int8/bf16 speed (from /proc/cpuinfo; '' elsewhere)."""
    fields = _cpu_info()
    if not fields:
        return ""
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    vnni = "" if {"avx512_vnni", "avx_vnni"} & flags else " (no VNNI: int8 convolutions gain little)"
    return f"{fields.get('model name', '?')}; " + " ".join(f for f in wanted if f in flags) + vnni


def _file_for(path: str, files: dict[str, str]) -> Optional[str]:
    if path.startswith("int8-"):
        return files[path]
    if path.startswith("runtime-"):
        return files["nms"]
    return files.get("raw")


def measure_model(model_name: str, paths: Sequence[str], baseline: Optional[Baseline], threads: int, rounds: int,
                  batch: int, batch_rounds: int, folder: Path, calibration: Optional[str]) -> dict[str, Any]:
    """Latency (batch 1) and throughput (``batch``) of every path, alternating; see the module doc."""
    macs, size = multiply_adds(model_name)
    files = export_files(model_name, folder, paths, calibration)
    workers: dict[str, Worker] = {}
    try:
        if baseline is not None:
            workers[baseline.name] = Worker(baseline.name, baseline.code,
                                            baseline.make_spec(model_name, size, threads, batch),
                                            _env(threads, baseline.pythonpath), baseline.cwd)
        for path in paths:
            spec = {"path": path, "model": model_name, "file": _file_for(path, files), "threads": threads}
            workers[path] = Worker(path, _OURS, spec, _env(threads, own_pythonpath()), str(PACKAGE_PARENT))
        names = list(workers)
        for name in names:  # warm-up
            for _ in range(2):
                workers[name].time(1)
        latency = {n: [] for n in names}
        rss = {n: 0.0 for n in names}
        for round_index in range(rounds):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                time.sleep(SETTLE_SECONDS)
                seconds, peak = workers[name].time(1)
                latency[name].append(seconds)
                rss[name] = max(rss[name], peak)
        throughput = {n: [] for n in names}
        for name in names:
            workers[name].time(batch)
        for round_index in range(batch_rounds):
            for name in names:
                time.sleep(SETTLE_SECONDS)
                throughput[name].append(batch / workers[name].time(batch)[0])
    finally:
        for worker in workers.values():
            worker.close()
    descriptions = dict(DESCRIPTIONS, **({baseline.name: baseline.description} if baseline is not None else {}))
    return {"model": model_name, "size": size, "macs": macs, "latency": latency, "throughput": throughput,
            "rss": rss, "batch": batch, "baseline": baseline.name if baseline is not None else None,
            "descriptions": descriptions}


# --------------------------------------------------------------------------------------------- report


def _ms(values: Sequence[float]) -> str:
    return (f"{statistics.median(values) * 1e3:.1f} ms ({min(values) * 1e3:.1f}–{max(values) * 1e3:.1f}, "
            f"n={len(values)})")


def table(result: dict[str, Any], flops: float) -> list[str]:
    latency, throughput, baseline = result["latency"], result["throughput"], result["baseline"]
    limit = 2.0 * result["macs"] / flops
    size = "×".join(str(s) for s in result["size"])
    rows = [f"| {result['model']} @{size}, batch 1, 640×480 image → boxes | latency | "
            f"×{baseline or 'baseline'} (same-round) | × FLOP limit ({limit * 1e3:.1f} ms) | "
            f"batch {result['batch']} images/s | peak RSS (MiB) |",
            "|---|---|---|---|---|---|"]
    for name, times in latency.items():
        ratio = "-"
        if baseline is not None and name != baseline:
            ratio = f"×{statistics.median(t / r for t, r in zip(times, latency[baseline])):.2f}"
        rows.append(f"| {result['descriptions'][name]} | {_ms(times)} | {ratio} | "
                    f"×{statistics.median(times) / limit:.1f} | {statistics.median(throughput[name]):.1f} | "
                    f"{result['rss'][name]:.0f} |")
    return rows


def run(models: Sequence[str] = DEFAULT_MODELS, paths: Sequence[str] = PATHS, threads: int = 2, rounds: int = 15,
        batch: int = 8, batch_rounds: int = 3, calibration: Optional[str] = None,
        baseline: Optional[Baseline] = None) -> list[str]:
    """Measure ``models`` on ``paths`` (and ``baseline`` in the same rounds); print and return markdown tables."""
    unknown = sorted(set(paths) - set(PATHS + OPTIONAL_PATHS))
    if unknown:
        raise ValueError(f"unknown backend path(s) {unknown}; valid: {list(PATHS + OPTIONAL_PATHS)}")
    flops_before = matmul_flops(threads)
    lines = []
    with tempfile.TemporaryDirectory(prefix="effdet-deploy-bench-") as folder:
        results = [measure_model(m, paths, baseline, threads, rounds, batch, batch_rounds, Path(folder), calibration)
                   for m in models]
    flops = statistics.median([flops_before, matmul_flops(threads)])
    lines.append(f"CPU: {cpu_features()}")
    lines.append(f"float32 matmul rate on {threads} threads: {flops / 1e9:.1f} GFLOP/s (2048² matmul, median of "
                 f"the rates measured before and after)")
    for result in results:
        lines.append("")
        lines.extend(table(result, flops))
    print("\n".join(lines), flush=True)
    return lines
