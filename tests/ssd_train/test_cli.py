import json

from ssd_train.cli import main


def test_check_runs_the_model_once(capsys):
    assert main(["check", "--width", "0.125", "--batch", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["locs"] == [2, 8732, 4] and report["class_logits"] == [2, 8732, 21]
    assert report["finite"] is True


def test_missing_vgg_weights_is_a_clean_error(capsys, tmp_path):
    assert main(["check", "--vgg-weights", str(tmp_path / "vgg16.pth")]) == 2
    assert "VGG-16 weights file not found" in capsys.readouterr().err
