"""``ssd-export int8 --max-drop``: the held-out images, Convs kept in float by surgery, the measured
ranking, the bounded trial loop (first trial within the target, or every trial and exit 1) and its reports."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import ssd_export.int8.search as int8_search
from ssd_export.int8.calibration import CalibrationSet, build_manifest, write_manifest
from ssd_export.int8.quantize import Int8Error, quantize_int8
from ssd_export.qdq_rules import check_qdq_rules
from ssd_export.int8.search import HeldOutWarning, heldout_images, layer_sensitivity, search_int8, trial_sizes
from ssd_export.int8.surgery import keep_float, quantized_convs
from ssd_runtime.convert import convert_dataset
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import read_onnx_info
from ssd_runtime.preprocess import preprocess
from ssd_runtime.voc import read_split_ids

FP32_MAP = 0.5


@pytest.fixture(scope="module")
def spec(runtime_onnx):
    return read_onnx_info(runtime_onnx).spec


@pytest.fixture(scope="module")
def calib(calibration_manifest) -> CalibrationSet:
    """8 of the 16 trainval images (tests/ssd_export/conftest.py): the other 8 are the held-out pool."""
    return CalibrationSet.load(calibration_manifest)


@pytest.fixture(scope="module")
def models(runtime_onnx, calib, tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(the baseline INT8 model, its fp32 source)."""
    out = tmp_path_factory.mktemp("base") / "int8.onnx"
    quantize_int8(runtime_onnx, calib, out, parity=False)
    return onnx.load(str(out)), onnx.load(str(runtime_onnx))


def _float_convs(model: onnx.ModelProto) -> list[str]:
    """Convs that no DequantizeLinear feeds (neither input nor weight)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and all(getattr(producer.get(i), "op_type", "") != "DequantizeLinear" for i in n.input[:2])]


def _fake_map(model: Path, records) -> float:
    """Stand-in for the held-out mAP: fp32 0.5; INT8 0.5 - 0.02 / (1 + float convs) (2, 1, 0.67, 0.4, 0.22 points)."""
    proto = onnx.load(str(model))
    assert len(records) and all(r.image_id for r in records)  # the held-out records the real mAP reads
    if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        return FP32_MAP
    return FP32_MAP - 0.02 / (1 + len(_float_convs(proto)))


# ----------------------------------------------------------------------------------- held-out images


def test_heldout_never_meets_calibration_or_test(voc_root, calib, spec):
    with pytest.warns(HeldOutWarning, match="8 held-out image"):
        heldout = heldout_images(voc_root, calib, spec.class_names, images=200)
    assert len(heldout.paths) == 8 and heldout.in_calibration == 8 and heldout.in_test == 0
    calib_paths = {entry["path"] for entry in calib.manifest["images"]}
    calib_hashes = {entry["sha256"] for entry in calib.manifest["images"]}
    test_ids = set(read_split_ids(voc_root, "test"))
    test_hashes = {sha256_file(voc_root / "JPEGImages" / f"{i}.jpg") for i in test_ids}
    assert not calib_paths & set(heldout.paths)
    assert not {sha256_file(r.image_path) for r in heldout.records} & (calib_hashes | test_hashes)
    assert not {r.image_id for r in heldout.records} & test_ids
    assert set(read_split_ids(voc_root, "trainval")) >= {r.image_id for r in heldout.records}
    again = heldout_images(voc_root, calib, spec.class_names, images=5)  # deterministic, a prefix-free choice
    assert again.paths == heldout_images(voc_root, calib, spec.class_names, images=5).paths
    assert set(again.paths) <= set(heldout.paths)


def test_heldout_of_the_coco_layout_is_the_voc_layouts(voc_root, calib, spec, tmp_path):
    convert_dataset(voc_root, tmp_path / "coco", "coco", images="link")  # same image files, COCO's annotations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeldOutWarning)
        voc, coco = (heldout_images(root, calib, spec.class_names, images=200) for root in (voc_root, tmp_path / "coco"))
    assert (coco.available, coco.in_calibration, coco.in_test) == (voc.available, voc.in_calibration, voc.in_test)
    by_id = {r.image_id: r.boxes.tolist() for r in voc.records}  # the choice's order follows the paths, which differ
    assert len(coco.records) == 8 and {r.image_id: r.boxes.tolist() for r in coco.records} == by_id


def test_heldout_leaves_out_a_copy_of_a_test_image(voc_root, calib, spec, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    calib = CalibrationSet.load(calib.path, data_root=root)
    pool = heldout_images(root, calib, spec.class_names, images=3)
    test_image = root / "JPEGImages" / f"{read_split_ids(root, 'test')[0]}.jpg"
    shutil.copyfile(test_image, root / pool.paths[0])  # same content as a test image, another name
    heldout = heldout_images(root, calib, spec.class_names, images=3)
    assert heldout.in_test == 1 and pool.paths[0] not in heldout.paths


def test_no_heldout_image_is_an_error(voc_root, spec, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = build_manifest(voc_root, split="trainval", images=16, seed=0, spec=spec)
    calib = CalibrationSet.load(write_manifest(data, tmp_path / "all.json"))
    with pytest.raises(Int8Error, match="no held-out image"):
        heldout_images(voc_root, calib, spec.class_names)


# ------------------------------------------------------------------------------- surgery and ranking


def test_kept_convs_are_really_float(models):
    base, fp32 = models
    convs = quantized_convs(base)
    assert len(convs) == sum(n.op_type == "Conv" for n in base.graph.node) and _float_convs(base) == []
    kept = [convs[0], convs[5], convs[-1]]  # the first conv (graph input), a middle one, a head
    model = keep_float(base, fp32, kept)
    assert _float_convs(model) == kept
    assert check_qdq_rules(model, float_nodes=kept) == []
    assert any(kept[1] in v for v in check_qdq_rules(model))  # the rules do see it as unquantized
    fp32_weights = {t.name: t for t in fp32.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    for name in kept:
        weight = next(t for t in model.graph.initializer if t.name == by_name[name].input[1])
        assert weight.data_type == onnx.TensorProto.FLOAT and weight == fp32_weights[weight.name]
    onnx.checker.check_model(model, full_check=True)
    assert quantized_convs(base) == convs  # the baseline is left as it was
    with pytest.raises(Int8Error, match="not a Conv"):
        keep_float(base, fp32, ["/Pow"])


def test_ranking_is_measured_and_deterministic(models, voc_root, spec):
    base, fp32 = models
    images = preprocess(sorted((voc_root / "JPEGImages").glob("*.jpg"))[:4], spec, "float32-nchw").pixels
    candidates = quantized_convs(base)[::4]  # a subset: each candidate costs one session
    error, ranking = layer_sensitivity(base, fp32, images, candidates)
    assert error > 0 and sorted(s["node"] for s in ranking) == sorted(candidates)
    scores = [s["score"] for s in ranking]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    assert all(s["score"] == pytest.approx(error - s["error_in_float"]) for s in ranking)


def test_search_ranking_is_deterministic(searched, models):
    """Two searches (two quantizations, two scorings) rank every quantized Conv the same, score for score."""
    first, second = searched["met"]["ranking"], searched["missed"]["ranking"]
    assert len(first) == len(quantized_convs(models[0])) and first == second
    assert searched["met"]["proxy"] == {**searched["missed"]["proxy"], "seconds": searched["met"]["proxy"]["seconds"]}


def test_trial_sizes():
    assert trial_sizes(4, 35) == [1, 2, 4, 8]
    assert trial_sizes(6, 5) == [1, 2, 4, 5]
    assert trial_sizes(1, 35) == [1]


# -------------------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def searched(runtime_onnx, calib, voc_root, tmp_path_factory) -> dict[str, dict]:
    """Searches with the stand-in mAP: a 1.5-point target (met by trial 1) and an impossible 0-point one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(int8_search, "_heldout_map", _fake_map)
        out = {}
        for name, max_drop in (("met", 1.5), ("missed", 0.0)):
            folder = tmp_path_factory.mktemp(name)
            with pytest.warns(HeldOutWarning):
                out[name] = search_int8(runtime_onnx, calib, folder / "int8.onnx", data=voc_root,
                                        max_drop=max_drop, parity=False)
        return out


def test_search_stops_at_the_first_trial_within_target(searched):
    report = searched["met"]
    assert report["baseline"]["drop_points"] == pytest.approx(2.0) and not report["baseline"]["met"]
    assert [t["name"] for t in report["trials"]] == ["trial1"] and report["met"]
    (trial,) = report["trials"]
    assert trial["kept_float"] == [report["ranking"][0]["node"]] and trial["drop_points"] == pytest.approx(1.0)
    assert report["chosen"] == "trial1" and report["kept_float"] == trial["kept_float"]
    model = onnx.load(report["output"])
    assert _float_convs(model) == trial["kept_float"]
    assert check_qdq_rules(model, float_nodes=trial["kept_float"]) == []
    assert report["final"]["max_abs_diff_vs_trial"] == 0.0  # the written model is the measured one


def test_impossible_target_exhausts_the_trials(searched):
    report = searched["missed"]
    assert not report["met"] and [len(t["kept_float"]) for t in report["trials"]] == [1, 2, 4, 8]
    assert report["chosen"] == "trial4"  # the smallest drop is written
    assert sorted(_float_convs(onnx.load(report["output"]))) == sorted(report["kept_float"])
    assert report["kept_float"] == [s["node"] for s in report["ranking"][:8]]


def test_reports_and_metadata(searched, runtime_onnx):
    report = searched["met"]
    out = Path(report["output"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["int8.onnx", "int8.onnx.int8.json",
                                                            "int8.onnx.int8_search.json"]  # no temporary left
    saved = json.loads(Path(report["report_path"]).read_text())
    assert saved["trials"] == report["trials"] and saved["ranking"] == report["ranking"]
    assert saved["heldout"]["images"] == 8 and saved["heldout"]["split"] == "trainval"
    settings = read_onnx_info(out).quantization["settings"]
    assert settings["excluded_nodes"]["sensitive"] == report["kept_float"]
    assert settings["search"]["met"] and settings["search"]["report"] == "int8.onnx.int8_search.json"
    assert settings["search"]["drop_points"] == pytest.approx(1.0)
    int8_json = json.loads(out.with_name("int8.onnx.int8.json").read_text())
    assert int8_json["settings"]["search"] == settings["search"]


def test_failed_search_writes_nothing(runtime_onnx, calib, voc_root, tmp_path, monkeypatch):
    out = tmp_path / "int8.onnx"
    out.write_bytes(b"previous")
    monkeypatch.setattr(int8_search, "_heldout_map", _fake_map)

    def broken(*_, **__):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(int8_search, "layer_sensitivity", broken)
    with pytest.raises(RuntimeError, match="interrupted"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search_int8(runtime_onnx, calib, out, data=voc_root, max_drop=0.5, parity=False)
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


# ------------------------------------------------------------------------------------------- the CLI


def _cli(runtime_onnx, calib, out, *extra) -> list[str]:
    return ["int8", "--onnx", str(runtime_onnx), "--calibration", str(calib.path), "-o", str(out), "--no-parity",
            *extra]


def test_cli_loose_target_measures_and_keeps_the_baseline(runtime_onnx, calib, voc_root, tmp_path, capsys):
    from ssd_export.cli import main

    out = tmp_path / "int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(_cli(runtime_onnx, calib, out, "--max-drop", "100", "--data", str(voc_root), "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["met"] and report["chosen"] == "baseline" and report["trials"] == [] and report["ranking"] == []
    assert 0 <= report["fp32_map"] <= 1 and 0 <= report["baseline"]["int8_map"] <= 1  # the real held-out mAP
    assert report["baseline"]["drop_points"] == pytest.approx((report["fp32_map"] - report["baseline"]["int8_map"]) * 100)
    assert read_onnx_info(out).quantization["settings"]["excluded_nodes"]["sensitive"] == []


def test_cli_impossible_target_exits_1(runtime_onnx, calib, voc_root, tmp_path, capsys, monkeypatch):
    from ssd_export.cli import main

    monkeypatch.setattr(int8_search, "_heldout_map", _fake_map)
    score = int8_search.layer_sensitivity  # the ranking is tested above; 4 candidates keep this test short
    monkeypatch.setattr(int8_search, "layer_sensitivity", lambda i, f, x: score(i, f, x, quantized_convs(i)[:4]))
    out = tmp_path / "int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(_cli(runtime_onnx, calib, out, "--max-drop", "0", "--data", str(voc_root),
                         "--max-trials", "2")) == 1
    captured = capsys.readouterr()
    assert "trial2" in captured.out and "OUTSIDE the target" in captured.out
    assert "no trial met the 0.0-point target in 2 trial(s)" in captured.err and "misses the target" in captured.err
    assert out.is_file() and Path(f"{out}.int8_search.json").is_file()


def test_cli_search_flags_go_together(runtime_onnx, calib, voc_root, tmp_path, capsys):
    from ssd_export.cli import main

    assert main(_cli(runtime_onnx, calib, tmp_path / "a.onnx", "--max-drop", "0.5")) == 2
    assert main(_cli(runtime_onnx, calib, tmp_path / "a.onnx", "--data", str(voc_root))) == 2
    assert "--max-drop and --data go together" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_calibrated_model_is_reused_only_with_its_own_settings(runtime_onnx, calib, tmp_path):
    """The search's final model reuses its baseline's calibration; another method or source is refused."""
    base = tmp_path / "base.onnx"
    quantize_int8(runtime_onnx, calib, base, method="max", parity=False)
    again = quantize_int8(runtime_onnx, calib, tmp_path / "again.onnx", method="max", parity=False, calibrated=base)
    assert again["calibration_reused_from"] == str(base) and again["rules"]["violations"] == []
    assert (tmp_path / "again.onnx").read_bytes() == base.read_bytes()
    with pytest.raises(Int8Error, match="cannot be reused"):
        quantize_int8(runtime_onnx, calib, tmp_path / "other.onnx", method="entropy", parity=False, calibrated=base)
    assert not (tmp_path / "other.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []
