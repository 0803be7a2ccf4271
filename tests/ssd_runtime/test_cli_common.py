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
