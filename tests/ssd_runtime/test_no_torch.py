"""The runtime's NumPy path never imports torch (edge devices install it without torch)."""
import json
import subprocess
import sys

CODE = """
import importlib, json, pkgutil, sys
import ssd_runtime
names = [m.name for m in pkgutil.walk_packages(ssd_runtime.__path__, "ssd_runtime.")]
# Modules that are torch-backed by design carry "torch" in their name (e.g. postprocess_torch).
numpy_path = [n for n in names if "torch" not in n.rsplit(".", 1)[-1]]
for name in numpy_path:
    importlib.import_module(name)
heavy = sorted(m for m in ("torch", "torchvision", "onnxruntime", "tensorrt", "ssd_train", "ssd_export") if m in sys.modules)
print(json.dumps({"imported": numpy_path, "heavy": heavy}))
"""


def test_ssd_runtime_imports_without_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "ssd_runtime.spec" in report["imported"]
    assert report["heavy"] == []
