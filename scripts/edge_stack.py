"""The edge-stack check of .ci/run: the same pixels and the same mAP on the JetPack 6 stack as in the main environment.

Two steps, each in its own environment, sharing a folder:

    .venv/bin/python scripts/edge_stack.py prepare DIR       # main env (torch): data, test model, its ONNX,
                                                               # the main env's pixels hash and evaluation
    .venv-edge/bin/python scripts/edge_stack.py check DIR    # edge env (Python 3.10, NumPy 1.26, Pillow 12.3,
                                                               # ONNX Runtime, no torch): the same, compared

``check`` exits 1 when the sha256 of the preprocessed test images (uint8, the model's preprocessing),
the evaluation (mAP and every class's AP, ONNX Runtime on one thread) or the sha256 of every detection
differs in any bit from the main environment's. Each step prints one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file from any folder: the repository's packages and tests/

#: Generated scenes: enough test images for each class to have detections, few enough for CI.
IMAGES, TEST_IMAGES = 48, 24


def _stack() -> dict:
    import numpy
    import PIL

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__,
            "onnxruntime": ort}


def _pixels_sha256(data: Path, model: Path) -> str:
    """sha256 of the test split preprocessed as the runtime does (uint8 (N, S, S, 3), the model's preprocessing)."""
    from ssd_runtime.onnx_model import read_onnx_spec
    from ssd_runtime.preprocess import preprocess
    from ssd_runtime.voc import read_voc_split

    spec = read_onnx_spec(model)
    records = read_voc_split(data, "test", spec.class_names)
    digest = hashlib.sha256()
    for record in records:
        digest.update(preprocess([record.image_path], spec, "uint8-nhwc").pixels.tobytes())
    return digest.hexdigest()


def _evaluate(data: Path, model: Path, detections: Path) -> dict:
    """``ssd-runtime eval --json`` of the ONNX model on the test split, one ONNX Runtime thread.

    Returns the mAP, every class's row (AP, detections, true positives) and the sha256 of the
    detections file (every box and score of every image, as JSON lines).
    """
    detections.unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "ssd_runtime.cli", "eval", "--model", str(model), "--data", str(data),
         "--split", "test", "--threads", "1", "--detections-out", str(detections), "--json"],
        check=True, capture_output=True, text=True, cwd=REPO,
    )
    runtime = json.loads(out.stdout)["runtime"]
    return {"map": runtime["map"], "per_class": runtime["classes"],
            "detections_sha256": hashlib.sha256(detections.read_bytes()).hexdigest()}


def prepare(folder: Path) -> dict:
    """Main environment: generate the data, train and export the test model, record pixels and evaluation."""
    from ssd_export.onnx.export import export_onnx
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.synthetic import generate_voc_dataset
    from tests.helpers.training import scene_batch, small_model, train_briefly

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    if not (data / "dataset.json").is_file():
        generate_voc_dataset(data, images=IMAGES, test=TEST_IMAGES)
    model, spec = small_model()
    images, boxes, labels = scene_batch(8, spec)
    train_briefly(model, images, boxes, labels, steps=14, pairs=4)
    checkpoint = save_checkpoint(folder / "edge.pt", model, spec)
    onnx = folder / "edge.onnx"
    export_onnx(checkpoint, onnx, verify=False)
    result = {"stack": _stack(), "pixels_sha256": _pixels_sha256(data, onnx),
              **_evaluate(data, onnx, folder / "main-detections.jsonl")}
    (folder / "main.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def check(folder: Path) -> dict:
    """Edge environment: the same pixels hash and evaluation as ``main.json``, bit for bit."""
    main = json.loads((folder / "main.json").read_text())
    edge = {"stack": _stack(), "pixels_sha256": _pixels_sha256(folder / "data", folder / "edge.onnx"),
            **_evaluate(folder / "data", folder / "edge.onnx", folder / "edge-detections.jsonl")}
    same = {key: edge[key] == main[key] for key in ("pixels_sha256", "map", "per_class", "detections_sha256")}
    return {"main": main, "edge": edge, "equal": same, "ok": all(same.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "check"))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    result = prepare(args.folder) if args.step == "prepare" else check(args.folder)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
