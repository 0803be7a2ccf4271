"""A real Triton Inference Server for the tests: the ``tritonserver`` that PyPI's ``nvidia-pytriton`` bundles.

``nvidia-pytriton`` 0.7.0 ships ``tritonserver`` 2.51.0 (the 24.10 release) with the Python backend
only (no ONNX Runtime or TensorRT backend). It pins numpy<2, so it lives in its own environment,
``.venv-triton`` at the repository root, made by ``scripts/make_triton_env.sh`` (CI runs it from
``.ci/run``): nvidia-pytriton, onnxruntime and the toolkit's torch-free runtime (``pip install -e .``)
under numpy<2, as in Triton's own images. The tests that need it are marked ``triton`` and skip, with
the reason, where that environment is absent.

How the server is started follows what pytriton itself does (``pytriton/triton.py``
``_prepare_triton_inference_server`` and ``pytriton/server/triton_server.py`` ``_get_env``): the
binary runs in place; the backends folder is copied with the Python backend stub built for the
environment's Python (``pytriton/tritonserver/python_backend_stubs/3.X``) placed as
``backends/python/triton_python_backend_stub``; ``LD_LIBRARY_PATH`` holds ``nvidia_pytriton.libs``
and the Python's libdir; ``PATH`` starts with the environment's ``bin`` so the stub runs that Python.

The server listens on free loopback ports only, in its own process group; :meth:`TritonServer.stop`
ends the whole group (SIGTERM, then SIGKILL). Its log is a file kept under the test's tmp folder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # tests/helpers/triton/ -> the checkout
#: The server's environment, made by scripts/make_triton_env.sh.
SERVER_ENV = REPO / ".venv-triton"
MAKE_ENV = "bash scripts/make_triton_env.sh"
#: Seconds the server may take to load the repository (it loads in 10-20 s on a 2-core CPU).
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


class TritonServerError(RuntimeError):
    """The server did not start, or stopped, as expected (the message carries its log's tail)."""


@dataclass(frozen=True)
class ServerEnvironment:
    """The ``.venv-triton`` environment: its Python, the bundled server and the libraries it needs."""

    python: Path
    python_version: str  # "3.11"
    python_libdir: Path
    server_dist: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs
    server_version: str


def find_server_environment(env: Path = SERVER_ENV) -> ServerEnvironment | str:
    """The server environment, or a string saying why there is none (a pytest skip reason)."""
    python = env / "bin" / "python"
    if not python.is_file():
        return f"no Triton server environment at {env}: make it with `{MAKE_ENV}` (CI does, in .ci/run)"
    probe = (
        "import json, sys, sysconfig, importlib.metadata as m, pathlib, pytriton\n"
        "root = pathlib.Path(pytriton.__file__).parent\n"
        "print(json.dumps({'version': f'{sys.version_info[0]}.{sys.version_info[1]}',"
        " 'libdir': sysconfig.get_config_var('LIBDIR'), 'dist': str(root / 'tritonserver'),"
        " 'libs': str(root.parent / 'nvidia_pytriton.libs'), 'pytriton': m.version('nvidia-pytriton')}))\n"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"{env} has no working nvidia-pytriton ({done.stderr.strip()[-300:]}); remake it with `{MAKE_ENV}`"
    info = json.loads(done.stdout)
    dist = Path(info["dist"])
    binary = dist / "bin" / "tritonserver"
    stub = dist / "python_backend_stubs" / info["version"] / "triton_python_backend_stub"
    for needed in (binary, stub, dist / "backends" / "python" / "libtriton_python.so"):
        if not needed.is_file():
            return f"nvidia-pytriton {info['pytriton']} in {env} lacks {needed} (Python {info['version']} unsupported?)"
    version = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "LD_LIBRARY_PATH": _library_path(Path(info["libs"]), Path(info["libdir"]))},
    )
    if version.returncode not in (0, 1) or "Usage: tritonserver" not in version.stdout + version.stderr:
        return f"the bundled tritonserver in {env} does not run here: {(version.stdout + version.stderr)[-300:]}"
    return ServerEnvironment(python=python, python_version=info["version"], python_libdir=Path(info["libdir"]),
                             server_dist=dist, libs=Path(info["libs"]), server_version=info["pytriton"])


def _library_path(libs: Path, python_libdir: Path) -> str:
    return ":".join([str(libs), str(python_libdir), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])


def free_port() -> int:
    """A free TCP port on the loopback (bound and released; the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonServer:
    """One ``tritonserver`` process serving ``repository`` on free loopback ports (use as a context manager)."""

    def __init__(self, env: ServerEnvironment, repository: Path, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.env, self.repository, self.workdir = env, repository, workdir
        self.extra_args = tuple(extra_args)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.log_path = workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> TritonServer:
        """Start the server and wait, at most ``timeout`` seconds, until ``/v2/health/ready`` answers 200."""
        backends = self.workdir / "backends"
        shutil.copytree(self.env.server_dist / "backends", backends)
        shutil.copy2(self.env.server_dist / "python_backend_stubs" / self.env.python_version
                     / "triton_python_backend_stub", backends / "python" / "triton_python_backend_stub")
        command = [
            str(self.env.server_dist / "bin" / "tritonserver"),
            f"--model-repository={self.repository}", f"--backend-directory={backends}",
            f"--cache-directory={self.env.server_dist / 'caches'}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--exit-on-error=true", "--log-verbose=0", *self.extra_args,
        ]
        env = {**os.environ, "LD_LIBRARY_PATH": _library_path(self.env.libs, self.env.python_libdir),
               "PATH": f"{self.env.python.parent}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)  # the stub's Python is the server environment's, with its own runtime
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonServerError(f"tritonserver exited with {self.process.returncode} while loading "
                                        f"{self.repository}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise TritonServerError(f"tritonserver was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """End the server's whole process group (its Python stubs too): SIGTERM, then SIGKILL."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers of the group (stubs) as well
        except ProcessLookupError:
            pass
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def assert_padded_equal(tensors: dict, expected: list, k: int | None = None) -> None:
    """Padded outputs (``boxes``, ``scores``, ``labels``, ``num_detections`` (N, 1)) == the runtime's Detections,
    bit for bit, and the padding (zero boxes and scores, labels -1); ``k``: the padded size, if checked."""
    import numpy as np

    assert tensors["num_detections"].shape == (len(expected), 1)
    for i, dets in enumerate(expected):
        m = len(dets)
        assert tensors["num_detections"][i, 0] == m
        np.testing.assert_array_equal(tensors["boxes"][i, :m], dets.boxes)
        np.testing.assert_array_equal(tensors["scores"][i, :m], dets.scores)
        np.testing.assert_array_equal(tensors["labels"][i, :m], dets.labels)
        assert (tensors["boxes"][i, m:] == 0).all() and (tensors["scores"][i, m:] == 0).all()
        assert (tensors["labels"][i, m:] == -1).all() and (k is None or m <= k)
