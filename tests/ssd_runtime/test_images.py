"""The safe image loader: formats, bombs, truncation, modes, EXIF."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ssd_runtime.errors import ImageError
from ssd_runtime.images import ALPHA_BACKGROUND, image_size, load_image, open_image, verify_image
from tests.helpers.image_faults import corrupt_huffman_table, truncate


def _rgb(h: int = 30, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_jpeg_and_png_load_as_rgb_uint8(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    png = load_image(tmp_path / "a.png")
    assert png.dtype == np.uint8 and png.shape == (30, 40, 3)
    assert np.array_equal(png, arr)
    assert load_image(tmp_path / "a.jpg").shape == (30, 40, 3)


def test_png_named_jpg_is_accepted_by_content(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "x.jpg", format="PNG")
    assert load_image(tmp_path / "x.jpg").shape == (30, 40, 3)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_under_jpg_name_are_refused(tmp_path, fmt):
    path = tmp_path / "x.jpg"
    Image.fromarray(_rgb()).save(path, format=fmt)
    with pytest.raises(ImageError, match="x.jpg.*not a JPEG or PNG"):
        load_image(path)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"\xff\xd8\xff" + b"\x00" * 10])
def test_not_an_image_names_the_file(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.jpg")


def test_truncated_jpeg_is_an_error_and_file_untouched(tmp_path):
    path = tmp_path / "t.jpg"
    Image.fromarray(_rgb(200, 200)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    with pytest.raises(ImageError, match="t.jpg.*truncated"):
        load_image(path)
    assert path.read_bytes() == before


def test_truncated_png_is_an_error(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(_rgb(200, 200)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="t.png"):
        load_image(path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    # a 40000 x 40000 1-bit PNG compresses to a few hundred KB; refused from the header
    path = tmp_path / "bomb.png"
    Image.new("1", (40000, 40000)).save(path, optimize=False)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
        "from ssd_runtime.images import load_image; from ssd_runtime.errors import ImageError\n"
        f"try:\n load_image({str(path)!r})\nexcept ImageError as e:\n print('refused', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused" in out.stdout and "bomb.png" in out.stdout, out.stderr


def test_max_pixels_is_configurable(tmp_path):
    Image.fromarray(_rgb(30, 40)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(tmp_path / "a.png", max_pixels=100)


def test_grayscale_and_palette_become_rgb(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (16, 16, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    Image.fromarray(_rgb()).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (30, 40, 3)


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_rgba_composited_over_background(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 200
    arr[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 3].tolist() == list(ALPHA_BACKGROUND)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "c.jpg")
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("orientation,expected_hw", [(1, (30, 40)), (3, (30, 40)), (6, (40, 30)), (8, (40, 30))])
def test_exif_orientation_applied(tmp_path, orientation, expected_hw):
    arr = np.zeros((30, 40, 3), dtype=np.uint8)
    arr[:5, :5] = 255  # white top-left corner
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "e.jpg"
    image.save(path, exif=exif, quality=100)
    out = load_image(path)
    assert out.shape[:2] == expected_hw
    assert image_size(path) == (expected_hw[1], expected_hw[0])
    corner = {1: out[:5, :5], 3: out[-5:, -5:], 6: out[:5, -5:], 8: out[-5:, :5]}[orientation]
    assert corner.mean() > 200


def test_open_image_returns_rgb_pil(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    image = open_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (40, 30)


def test_importing_ssd_runtime_needs_neither_torch_nor_defusedxml():
    code = "import sys, ssd_runtime, ssd_runtime.voc, ssd_runtime.images; print('torch' in sys.modules, 'defusedxml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


# ----------------------------------------------------------------------------------------------
# verify_image: the check before a long run (header, pixel limit, completeness; decode=True decodes)


def _jpeg(path, h: int = 120, w: int = 160) -> None:
    Image.fromarray(_rgb(h, w)).save(path, quality=90)


def test_verify_image_returns_the_upright_size_without_decoding(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert verify_image(tmp_path / "a.jpg") == (160, 120) == verify_image(tmp_path / "a.jpg", decode=True)
    assert verify_image(tmp_path / "a.png") == (40, 30)
    image = Image.fromarray(_rgb())
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap, as open_image returns it
    image.save(tmp_path / "r.jpg", exif=exif)
    assert verify_image(tmp_path / "r.jpg") == image_size(tmp_path / "r.jpg") == open_image(tmp_path / "r.jpg").size


@pytest.mark.parametrize("name", ["t.jpg", "t.png"])
def test_verify_image_finds_truncated_files_and_leaves_them_alone(tmp_path, name):
    path = tmp_path / name
    Image.fromarray(_rgb(200, 200)).save(path)
    truncate(path)
    before = path.read_bytes()
    with pytest.raises(ImageError, match=rf"{name}: truncated or corrupt"):
        verify_image(path)
    assert path.read_bytes() == before


def test_verify_image_accepts_bytes_after_the_jpeg_end_marker(tmp_path):
    path = tmp_path / "tail.jpg"
    _jpeg(path)
    path.write_bytes(path.read_bytes() + b"camera maker notes after the image")
    assert verify_image(path) == (160, 120)  # no end marker at the end: decoded to decide, and it loads


def test_verify_image_refuses_what_open_image_refuses(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg.*not a JPEG or PNG"):
        verify_image(tmp_path / "text.jpg")
    Image.fromarray(_rgb()).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="exceeds the limit"):
        verify_image(tmp_path / "big.png", max_pixels=100)
    with pytest.raises(FileNotFoundError):
        verify_image(tmp_path / "missing.jpg")


def test_a_corrupt_huffman_table_needs_the_decode(tmp_path):
    # the quick check's known limit: the stream is only checked by decoding it
    path = tmp_path / "h.jpg"
    _jpeg(path)
    corrupt_huffman_table(path)
    assert verify_image(path) == (160, 120)
    with pytest.raises(ImageError, match="h.jpg: truncated or corrupt"):
        verify_image(path, decode=True)
    with pytest.raises(ImageError, match="h.jpg"):
        open_image(path)
