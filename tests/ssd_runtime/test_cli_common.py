"""The CLIs' shared error handling: a DataLoader worker's error reads as the toolkit's own message."""
from __future__ import annotations

import argparse

import pytest

from ssd_runtime import cli_common
from ssd_runtime.errors import AnnotationError, ImageError


def _reraised_from_a_worker(exc: BaseException) -> BaseException:
    """What torch raises in the main process for ``exc`` raised in a DataLoader worker (torch's own wrapper)."""
    torch_utils = pytest.importorskip("torch._utils")
    try:
        raise exc
    except BaseException:
        wrapper = torch_utils.ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(type(exc)) as caught:
        wrapper.reraise()
    return caught.value


def _chained_image_error() -> ImageError:
    try:
        try:
            raise OSError("broken data stream when reading image file")
        except OSError as exc:
            raise ImageError("/data/x.jpg: truncated or corrupt image data (broken data stream)") from exc
    except ImageError as error:
        return error


def test_the_original_message_is_recovered_from_a_chained_worker_traceback():
    reraised = _reraised_from_a_worker(_chained_image_error())
    assert str(reraised).startswith("Caught ImageError in DataLoader worker process 0.")
    assert cli_common.worker_error_message(str(reraised)) == (
        "/data/x.jpg: truncated or corrupt image data (broken data stream)"
    )


def test_a_message_of_several_lines_is_kept_whole():
    message = "split 'trainval': 2 class name(s) not in the class list:\n  'persn' in 1 file(s)\npass the list"
    reraised = _reraised_from_a_worker(AnnotationError(message))
    assert cli_common.worker_error_message(str(reraised)) == message


@pytest.mark.parametrize("text", ["/data/x.jpg: not a JPEG or PNG image", "Caught you", ""])
def test_other_messages_are_not_unwrapped(text):
    assert cli_common.worker_error_message(text) is None


def test_run_prints_the_unwrapped_message_on_one_line(capsys):
    reraised = _reraised_from_a_worker(_chained_image_error())

    def fail(args: argparse.Namespace) -> int:
        raise reraised

    def add(sub: argparse._SubParsersAction) -> None:
        sub.add_parser("go").set_defaults(func=fail)

    parser = cli_common.build_parser("prog", "test", [add])
    assert cli_common.run(parser, ["go"]) == 2
    err = capsys.readouterr().err
    assert err == "prog go: error: /data/x.jpg: truncated or corrupt image data (broken data stream)\n"


# --- the one vocabulary (ssd_runtime.options) -----------------------------------------------------------

def _parser(tool: str) -> argparse.ArgumentParser:
    from ssd_export.cli import build_parser as export_parser
    from ssd_runtime.cli import build_parser as runtime_parser
    from ssd_train.cli import build_parser as train_parser

    return {"ssd-train": train_parser, "ssd-runtime": runtime_parser, "ssd-export": export_parser}[tool]()


#: (tool, argv with an old spelling, the same with the new one, the old flag, the new flag)
OLD_SPELLINGS = [
    ("ssd-train", ["check", "--batch", "2"], ["check", "--batch-size", "2"], "--batch", "--batch-size"),
    ("ssd-train", ["data", "--out", "d", "--images", "9"], ["data", "--out", "d", "--num-images", "9"],
     "--images", "--num-images"),
    ("ssd-train", ["eval", "--checkpoint", "c.pt", "--data", "d"], ["eval", "--model", "c.pt", "--data", "d"],
     "--checkpoint", "--model"),
    ("ssd-train", ["eval", "--model", "c.pt", "--data", "d", "--images", "4"],
     ["eval", "--model", "c.pt", "--data", "d", "--max-images", "4"], "--images", "--max-images"),
    ("ssd-train", ["detect", "--checkpoint", "c.pt", "x.jpg"], ["detect", "--model", "c.pt", "x.jpg"],
     "--checkpoint", "--model"),
    ("ssd-runtime", ["bench", "--model", "m.onnx", "--images", "a.jpg", "b"],
     ["bench", "--model", "m.onnx", "--image-paths", "a.jpg", "b"], "--images", "--image-paths"),
    ("ssd-export", ["onnx", "--checkpoint", "c.pt", "-o", "m.onnx"], ["onnx", "--model", "c.pt", "-o", "m.onnx"],
     "--checkpoint", "--model"),
    ("ssd-export", ["verify", "--model", "m.onnx", "--checkpoint", "c.pt", "--batch", "2"],
     ["verify", "--model", "m.onnx", "--checkpoint", "c.pt", "--batch-size", "2"], "--batch", "--batch-size"),
    ("ssd-export", ["calibration", "--data", "d", "--images", "12"], ["calibration", "--data", "d", "--calibration-images", "12"],
     "--images", "--calibration-images"),
    ("ssd-export", ["int8", "--onnx", "m.onnx", "--calibration", "c.json", "-o", "q.onnx"],
     ["int8", "--model", "m.onnx", "--calibration", "c.json", "-o", "q.onnx"], "--onnx", "--model"),
    ("ssd-export", ["engine", "--onnx", "m.onnx", "-o", "m.engine"], ["engine", "--model", "m.onnx", "-o", "m.engine"],
     "--onnx", "--model"),
    ("ssd-export", ["engine", "--model", "m.onnx", "-o", "m.engine", "--batch", "1,4,8"],
     ["engine", "--model", "m.onnx", "-o", "m.engine", "--batch-profile", "1,4,8"], "--batch", "--batch-profile"),
    ("ssd-export", ["engine", "--model", "m.onnx", "-o", "m.engine", "--device", "1"],
     ["engine", "--model", "m.onnx", "-o", "m.engine", "--device", "cuda:1"], "--device 1", "--device cuda:1"),
    ("ssd-export", ["triton", "--model", "m.onnx", "--out", "r", "--max-batch", "4"],
     ["triton", "--model", "m.onnx", "--out", "r", "--max-batch-size", "4"], "--max-batch", "--max-batch-size"),
    ("ssd-export", ["deploy", "--checkpoint", "c.pt", "--data", "d", "--out", "o"],
     ["deploy", "--model", "c.pt", "--data", "d", "--out", "o"], "--checkpoint", "--model"),
    ("ssd-export", ["deploy", "--model", "c.pt", "--data", "d", "--out", "o", "--bench-batches", "1", "2"],
     ["deploy", "--model", "c.pt", "--data", "d", "--out", "o", "--bench-batch-sizes", "1", "2"],
     "--bench-batches", "--bench-batch-sizes"),
]


@pytest.mark.parametrize("tool, old, new, old_flag, new_flag", OLD_SPELLINGS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_an_old_spelling_parses_as_the_new_one_with_a_one_line_note(tool, old, new, old_flag, new_flag, capsys):
    parser = _parser(tool)
    expected = vars(parser.parse_args(new))
    assert capsys.readouterr().err == ""
    assert vars(parser.parse_args(old)) == expected
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and f"{tool} {old[0]}: {old_flag} is deprecated" in note and note.rstrip().endswith(
        f"use {new_flag}")


def test_a_required_option_is_required_by_any_spelling_and_shown_as_required(capsys):
    parser = _parser("ssd-export")
    assert cli_common.run(parser, ["engine", "-o", "m.engine"]) == 2
    err = capsys.readouterr().err
    assert "error: the following arguments are required: --model" in err
    assert "usage: ssd-export engine [-h] --model MODEL -o OUTPUT" in err
    assert "--onnx" not in parser._subparsers._group_actions[0].choices["engine"].format_help()


@pytest.mark.parametrize("text", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_the_device_grammar_accepts(text):
    from ssd_runtime.options import check_device

    assert check_device(text) == text


@pytest.mark.parametrize("text", ["nvidia", "cuda:", "cuda:x", "CUDA", "cuda:-1", "1", ""])
def test_the_device_grammar_refuses(text, capsys):
    from ssd_runtime.options import check_device

    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
        check_device(text)
    for tool, command in (("ssd-runtime", ["detect", "--model", "m.onnx", "x.jpg"]),
                          ("ssd-train", ["eval", "--model", "c.pt", "--data", "d"])):
        assert cli_common.run(_parser(tool), [*command, "--device", text]) == 2
        assert "device must be cpu, cuda or cuda:N" in capsys.readouterr().err


def test_the_engine_takes_cuda_devices_only(capsys):
    from ssd_runtime.options import check_device, device_index

    assert [device_index(d) for d in ("cuda", "cuda:0", "cuda:3")] == [0, 0, 3]
    with pytest.raises(ValueError, match="device must be cuda or cuda:N, got 'cpu'"):
        check_device("cpu", cpu=False)
    with pytest.raises(ValueError, match="device must be cpu or cuda, got 'cuda:1'"):
        check_device("cuda:1", indexed=False)
    assert cli_common.run(_parser("ssd-export"), ["engine", "--model", "m.onnx", "-o", "e", "--device", "cpu"]) == 2
    assert "device must be cuda or cuda:N, got 'cpu'" in capsys.readouterr().err


def _cli_modules() -> set[str]:
    return {"ssd_runtime.cli", "ssd_runtime.cli_common", "ssd_train.cli", "ssd_export.cli"}


def test_no_library_module_imports_a_cli_module():
    """Library code takes what it needs from non-CLI homes (defaults: ssd_runtime.options.default_of)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    wrong = []
    for package in ("ssd_runtime", "ssd_train", "ssd_export"):
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            if name in _cli_modules():
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    targets = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                elif isinstance(node, ast.Import):
                    targets = {a.name for a in node.names}
                else:
                    continue
                wrong += [f"{name} imports {t}" for t in sorted(targets & _cli_modules())]
    assert wrong == []
