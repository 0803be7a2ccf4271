"""The README's commands stay true: each one parses with its CLI's own parser, the ones that need no
model or data run, the Python blocks compile, and every link points at a file or heading.

Commands that need missing hardware or data (a GPU, TensorRT, Pascal VOC, the tutorial's file) are
parsed, not run; the main job itself (``scripts/quickstart.sh``) runs the rest end to end.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TOOLS = ("ssd-train", "ssd-export", "ssd-runtime")
#: Commands run for real here (fast, no model or data needed).
RUN = (["ssd-runtime", "priors"], ["ssd-train", "check", "--width", "0.125"])


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def readme_commands() -> list[list[str]]:
    """Every toolkit command of the README's bash blocks as argv (``torchrun ... -m ssd_train.cli`` included)."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for start in range(len(words)):
                if words[start] in TOOLS:
                    command = words[start:]
                elif words[start : start + 2] == ["-m", "ssd_train.cli"]:
                    command = ["ssd-train", *words[start + 2 :]]
                else:
                    continue
                end = command.index("&&") if "&&" in command else len(command)
                commands.append(command[:end])
    return commands


def _parser(tool: str):
    if tool == "ssd-train":
        from ssd_train.cli import build_parser
    elif tool == "ssd-export":
        from ssd_export.cli import build_parser
    else:
        from ssd_runtime.cli import build_parser
    return build_parser()


def test_readme_has_commands_of_every_tool():
    tools = {argv[0] for argv in readme_commands()}
    assert tools == set(TOOLS)
    assert ["ssd-export", "deploy"] in [argv[:2] for argv in readme_commands()]


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: " ".join(argv[:2]))
def test_readme_command_parses(argv, capsys):
    try:
        args = _parser(argv[0]).parse_args(argv[1:])
    except SystemExit as exc:  # argparse's way of refusing a flag
        pytest.fail(f"README command does not parse ({exc}): {' '.join(argv)}")
    assert callable(args.func)
    assert "deprecated" not in capsys.readouterr().err, f"README command uses an old spelling: {' '.join(argv)}"


@pytest.mark.parametrize("argv", RUN, ids=" ".join)
def test_readme_commands_without_a_model_run(argv, capsys):
    assert argv in readme_commands()
    parser = _parser(argv[0])
    args = parser.parse_args(argv[1:])
    assert args.func(args) in (0, None)
    assert capsys.readouterr().out.strip()


def test_readme_python_blocks_compile():
    blocks = _blocks("python")
    assert blocks
    for block in blocks:
        compile(block, str(README), "exec")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_point_at_files_and_headings():
    text = README.read_text(encoding="utf-8")
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        if link.startswith("#"):
            assert link[1:] in anchors, f"README links to a missing heading: {link}"
        else:
            assert (README.parent / link.split("#")[0]).exists(), f"README links to a missing file: {link}"
