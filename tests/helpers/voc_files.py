"""VOC annotation files written for a test: ``obj`` and ``xml`` give the XML text, ``make_root`` lays out a
VOC root (Annotations, JPEGImages, ImageSets/Main) with one grey image per annotation."""
from __future__ import annotations

from pathlib import Path

from PIL import Image


def obj(name="cat", box=(11, 21, 60, 80), difficult: str | None = "0", extra: str = "") -> str:
    """One ``<object>`` element; ``box`` in VOC's 1-based pixel coordinates, ``difficult=None`` leaves the tag out."""
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name>{diff}<bndbox>{coords}</bndbox>{extra}</object>"


def xml(objects: list[str], size: tuple[int, int] | None = (100, 90)) -> str:
    """An ``<annotation>`` document with these objects; ``size`` (width, height), None leaves ``<size>`` out."""
    size_el = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    return f"<annotation><filename>x.jpg</filename>{size_el}{''.join(objects)}</annotation>"


def make_root(root: Path, items: dict[str, str], split: str = "trainval", image_size=(100, 90)) -> Path:
    """A VOC root with one image + XML per id (XML text given)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, text in items.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        Image.new("RGB", image_size, (90, 90, 90)).save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in items))
    return root
