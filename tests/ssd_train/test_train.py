"""Training: exact resume on the CPU, NaN stop, fine-tuning with another class list, the LR schedule."""
import csv
import math

import pytest
import torch

from ssd_train.checkpoint import load_checkpoint
from ssd_train.synthetic import generate_voc_dataset
from ssd_train.train import TrainConfig, TrainingError, fit, lr_factor


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_voc_dataset(root, images=28, test=8, seed=3)
    return root


def config(dataset, out, **overrides) -> TrainConfig:
    base = dict(data=[str(dataset)], out=str(out), width=0.0625, batch_size=4, iterations=6, optimizer="sgd",
                lr=1e-3, workers=0, log_every=1, save_every=100, progress=False, seed=5)
    base.update(overrides)
    return TrainConfig(**base)


def losses(out) -> list[tuple[int, str]]:
    with open(out / "metrics.csv") as f:
        return [(int(r["iteration"]), r["loss"]) for r in csv.DictReader(f) if r["loss"]]


QUICK_OPTIONS = {"norm": "batch-from-conv2", "head_init": "background", "augment": "light", "optimizer": "adamw"}


@pytest.mark.parametrize("options", [{}, QUICK_OPTIONS, {**QUICK_OPTIONS, "ema": 0.9}],
                         ids=["reference", "quick-options", "quick-options-ema"])
def test_resume_reproduces_the_uninterrupted_run(dataset, tmp_path, options):
    torch.set_num_threads(1)  # bit-exact arithmetic across the two runs
    full = fit(config(dataset, tmp_path / "full", **options))
    assert full.iteration == 6 and not full.stopped_early
    first = fit(config(dataset, tmp_path / "split", stop_at=3, **options))
    assert first.iteration == 3 and first.stopped_early
    second = fit(config(dataset, tmp_path / "split", resume=True, **options))
    assert second.iteration == 6
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for key in a.model_state:
        torch.testing.assert_close(a.model_state[key], b.model_state[key], rtol=0, atol=0, msg=key)
    assert a.training["iteration"] == 6
    if options.get("ema"):  # the training weights, kept beside the average, resume exactly too
        for key in a.training["model"]:
            torch.testing.assert_close(a.training["model"][key], b.training["model"][key], rtol=0, atol=0, msg=key)


def test_resume_with_other_settings_is_refused(dataset, tmp_path):
    fit(config(dataset, tmp_path, stop_at=1))
    with pytest.raises(TrainingError, match="lr: 0.001 -> 0.01"):
        fit(config(dataset, tmp_path, lr=1e-2, resume=True))


def test_model_ema_update():
    from torch import nn

    from ssd_train.ema import ModelEMA

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.99)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()(torch.randn(8, 3))  # moves the BatchNorm statistics and counts a batch
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    decay = 2 / 11  # the warm-up caps the decay at (1 + t) / (10 + t) for update t = 1
    now = model.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, decay * start[key] + (1 - decay) * now[key], msg=key)
        else:
            assert torch.equal(value, now[key]), key  # num_batches_tracked is copied
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    for _ in range(1000):
        ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight)
    assert ema.updates == 1001


def test_ema_checkpoint_holds_the_averaged_weights(dataset, tmp_path):
    result = fit(config(dataset, tmp_path, iterations=3, ema=0.9, eval_every=3))
    checkpoint = load_checkpoint(result.last_checkpoint)
    assert checkpoint.training["ema_updates"] == 3 and checkpoint.training["config"]["ema"] == 0.9
    key = "base.conv4_3.weight"
    assert not torch.equal(checkpoint.model_state[key], checkpoint.training["model"][key])
    checkpoint.build_model()  # the averaged weights make a complete network
    assert load_checkpoint(result.best_checkpoint).model_state[key].equal(checkpoint.model_state[key])
    with pytest.raises(TrainingError, match="ema: 0.9 -> 0.0"):
        fit(config(dataset, tmp_path, iterations=4, ema=0.0, resume=True))
    with pytest.raises(ValueError, match="ema is a decay"):
        config(dataset, tmp_path, ema=1.0)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    with pytest.raises(TrainingError, match=r"non-finite loss at iteration \d+: total .*loc .*conf") as info:
        fit(config(dataset, tmp_path, lr=1e5, iterations=30, save_every=1))
    bad = int(str(info.value).split("iteration ")[1].split(":")[0])
    last = load_checkpoint(tmp_path / "last.pt")
    assert last.training["iteration"] == bad - 1
    assert all(torch.isfinite(v).all() for v in last.model_state.values())


def test_init_from_with_another_class_list(dataset, tmp_path):
    fit(config(dataset, tmp_path / "a", iterations=1))
    result = fit(config(dataset, tmp_path / "b", iterations=1, init_from=str(tmp_path / "a" / "last.pt"),
                        classes=["circle", "square", "triangle"], skip_unknown_classes=True))
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt.spec.class_names == ("background", "circle", "square", "triangle")
    assert ckpt.model_state["pred_convs.cl_conv4_3.weight"].shape[0] == 4 * 4


def test_prior_preset_is_recorded_and_init_from_other_priors_is_refused(dataset, tmp_path):
    from ssd_runtime.priors import PRIOR_PRESETS, PriorConfig

    result = fit(config(dataset, tmp_path / "coco", iterations=1, priors="coco"))
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt.spec.priors == PriorConfig(**PRIOR_PRESETS["coco"]) and ckpt.training["config"]["priors"] == "coco"
    with pytest.raises(ValueError, match="give the same --priors"):
        fit(config(dataset, tmp_path / "ref", iterations=1, init_from=result.last_checkpoint))
    with pytest.raises(TrainingError, match="priors"):
        fit(config(dataset, tmp_path / "coco", iterations=2, priors="reference", resume=True))
    with pytest.raises(ValueError, match="priors must be one of"):
        config(dataset, tmp_path, priors="tiny")


def test_periodic_evaluation_writes_best(dataset, tmp_path):
    result = fit(config(dataset, tmp_path, iterations=2, eval_every=2))
    assert result.best_checkpoint and len(result.history) == 1
    assert 0.0 <= result.best_map <= 1.0


def test_lr_schedule():
    c = TrainConfig(data=["x"], out="y")
    assert lr_factor(c, 0) == 1.0 and lr_factor(c, 80_000) == pytest.approx(0.1) and lr_factor(c, 100_000) == pytest.approx(0.01)
    w = TrainConfig(data=["x"], out="y", warmup=10, schedule="cosine", iterations=110)
    assert lr_factor(w, 0) == pytest.approx(0.001) and lr_factor(w, 10) == pytest.approx(1.0)
    assert lr_factor(w, 60) == pytest.approx(0.5) and lr_factor(w, 110) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(data=["x"], out="y", optimizer="lion")
    for name in ("norm", "head_init", "augment"):
        with pytest.raises(ValueError, match=name):
            TrainConfig(data=["x"], out="y", **{name: "other"})
    assert math.isclose(lr_factor(c, 79_999), 1.0)
    with pytest.raises(ValueError, match="match_threshold is an IoU"):
        TrainConfig(data=["x"], out="y", match_threshold=0.0)


def test_cli_fit_and_eval(dataset, tmp_path, capsys):
    import json

    from ssd_train.cli import main

    out = tmp_path / "run"
    assert main(["fit", "--data", str(dataset), "--out", str(out), "--width", "0.0625", "--batch-size", "4",
                 "--iterations", "2", "--workers", "0", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iteration"] == 2 and summary["recipe"] == "reference"
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--data", str(dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 8 and 0.0 <= report["map"] <= 1.0 and report["ap_method"] == "11point"
    # detect: a folder of images -> drawn JPEGs and JSON in pixel coordinates
    assert main(["detect", "--checkpoint", str(out / "last.pt"), str(dataset / "JPEGImages"), "--out",
                 str(tmp_path / "det"), "--min-score", "0.01", "--top-k", "5", "--json"]) == 0
    drawn = json.loads(capsys.readouterr().out)
    assert len(drawn) == 28 and all(d["detections"] <= 5 for d in drawn)
    first = json.loads((tmp_path / "det" / "000000.json").read_text())
    assert first["width"] > 0 and len(first["detections"]) <= 5
    assert all({"box", "label", "class_name", "score"} <= set(d) for d in first["detections"])
    assert main(["fit", "--data", str(dataset), "--out", str(out), "--lr", "0.5", "--resume", "--width", "0.0625",
                 "--batch-size", "4", "--iterations", "2", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_distributed_two_gloo_processes(dataset, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "ssd_train.cli", "fit", "--data", str(dataset), "--out", str(out), "--width", "0.0625",
           "--batch-size", "4", "--iterations", "3", "--workers", "0", "--log-every", "1", "--no-progress", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "last.pt").is_file()
    assert [i for i, _ in losses(out)] == [1, 2, 3]  # rank 0 alone logs
    assert load_checkpoint(out / "last.pt").training["iteration"] == 3


def test_cpu_quick_recipe_is_recorded_and_flags_override_it(dataset, tmp_path, capsys):
    from ssd_train.cli import main
    from ssd_train.config import RECIPES

    recipe = RECIPES["cpu-quick"]
    out = tmp_path / "quick"
    assert main(["fit", "--data", str(dataset), "--out", str(out), "--recipe", "cpu-quick", "--iterations", "2",
                 "--batch-size", "4", "--width", "0.0625", "--workers", "0", "--eval-every", "0", "--augment", "light",
                 "--no-progress", "--json"]) == 0
    capsys.readouterr()
    checkpoint = load_checkpoint(out / "last.pt")
    saved = checkpoint.training["config"]
    assert saved["norm"] == recipe["norm"] == checkpoint.spec.norm
    assert saved["head_init"] == recipe["head_init"] and saved["optimizer"] == recipe["optimizer"]
    assert saved["augment"] == "light" and saved["iterations"] == 2 and saved["width"] == 0.0625
    assert saved["match_threshold"] == recipe["match_threshold"]


def test_a_run_on_the_coco_layout_is_the_run_on_voc(dataset, tmp_path):
    """The same dataset as COCO trains the same weights and evaluates to the same mAP with the same seed (#27)."""
    from ssd_runtime.convert import convert_dataset

    torch.set_num_threads(1)  # bit-exact arithmetic across the two runs
    convert_dataset(dataset, tmp_path / "coco", "coco", images="link")
    voc = fit(config(dataset, tmp_path / "voc", iterations=4, eval_every=4))
    coco = fit(config(tmp_path / "coco", tmp_path / "coco-run", iterations=4, eval_every=4))
    assert losses(tmp_path / "coco-run") == losses(tmp_path / "voc")
    assert coco.best_map == voc.best_map and coco.history == voc.history
    a, b = load_checkpoint(tmp_path / "voc" / "last.pt"), load_checkpoint(tmp_path / "coco-run" / "last.pt")
    assert a.spec.class_names == b.spec.class_names
    for key in a.model_state:
        torch.testing.assert_close(a.model_state[key], b.model_state[key], rtol=0, atol=0, msg=key)
