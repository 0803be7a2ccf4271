"""scripts/gpu_check_tensorrt.py stays runnable where TensorRT is absent (the lent GPU machines have none):
it reports why it skipped, as JSON, and exits 0, so scripts/gpu_check.py's report always has the entry."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_without_tensorrt_the_check_says_it_skipped():
    script = "import sys, runpy; sys.modules['tensorrt'] = None; sys.argv = ['x']; runpy.run_path(" \
             f"{str(ROOT / 'scripts' / 'gpu_check_tensorrt.py')!r}, run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["skipped"].startswith("skipped: no tensorrt module")
