"""Does OpenVINO pay off over ONNX Runtime for `sonoseg segment`? Batch-1 CPU latency of the graph
`sonoseg export` writes, in both runtimes, measured interleaved (each round times ONNX Runtime and
then OpenVINO on the same input) so that both see the same machine load, plus the largest
difference between their probabilities.

OpenVINO is not a dependency of sonoseg: `pip install openvino` first.
Run: python bench/bench_openvino.py [--networks unet slim_unet] [--size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from sonoseg.networks import models
from sonoseg.serving.cost import median_ms
from sonoseg.serving.export import export_network, onnx_session, run_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=["unet", "slim_unet", "lighter_unet_c128"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import openvino
    except ImportError:
        raise SystemExit("bench_openvino: OpenVINO is not installed (pip install openvino)") from None
    core = openvino.Core()
    x = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    print(f"OpenVINO {openvino.__version__}, {args.threads} threads, {args.size}x{args.size}, batch 1")
    print("network | ONNX Runtime ms (per round) | OpenVINO ms (per round) | OpenVINO / ORT | max |p diff|")
    for name in args.networks:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_network(models.build(name), None, args.size, f"{tmp}/model.onnx")
            session = onnx_session(path, args.threads)
            compiled = core.compile_model(
                str(path), "CPU", {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
            )
        request = compiled.create_infer_request()
        output = compiled.output(0)
        diff = float(np.abs(run_session(session, x) - request.infer({0: x})[output]).max())
        ort, ov = [], []
        for _ in range(args.rounds):
            ort.append(median_ms(lambda session=session: run_session(session, x), args.repeats, 1))
            ov.append(median_ms(lambda request=request: request.infer({0: x}), args.repeats, 1))
        ratio = np.median(ov) / np.median(ort)
        print(f"{name} | {[round(v) for v in ort]} | {[round(v) for v in ov]} | {ratio:.2f} | {diff:.1e}")


if __name__ == "__main__":
    main()
