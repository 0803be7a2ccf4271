"""Sharding: --shard and torchrun parsing, each shard's share, and sharded evaluations in real processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssd_runtime.cli import main
from ssd_runtime.evaluate import map_report_of_model_file
from ssd_runtime.sharding import (
    Shard,
    device_for,
    parse_shard,
    part_path,
    part_paths,
    resolve_shard,
    shard_range,
)
from tests.helpers.processes import run_process_group, test_env

#: Identical mAPs by construction: every shard runs the single process's batches (whole batches of 2) with
#: its kernels and thread count (1), so each image's outputs are the same bits. The thread count is pinned
#: because ONNX Runtime's outputs may change with it (the INT8 test model's by up to 1.9e-6 between 1 and 2
#: threads on an AMD EPYC; docs/development.md).
SINGLE = {"batch_size": 2, "backend_options": {"intra_op_threads": 1}}


def test_parse_and_resolve_shard():
    assert parse_shard("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    for bad in ("4/4", "-1/2", "1/0", "a/2", "1", "1/2/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert resolve_shard(None, {}) == Shard()
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    shard = resolve_shard(None, torchrun)
    assert shard == Shard(3, 4, torchrun=True, local_rank=1) and not shard.main
    assert device_for("cuda", shard) == "cuda:1" and device_for("cpu", shard) == "cpu"
    assert device_for("cuda", Shard(0, 2)) == "cuda"  # --shard by hand: the device as given
    with pytest.raises(ValueError, match="drop --shard"):
        resolve_shard("0/2", torchrun)
    assert resolve_shard("1/2", {"RANK": "0", "WORLD_SIZE": "1"}) == Shard(1, 2)


def test_shares_are_whole_batches_that_cover_the_list_once():
    for num_items in range(0, 40):
        for batch_size in (1, 2, 3, 8):
            for count in (1, 2, 3, 5):
                shares = [shard_range(num_items, batch_size, Shard(i, count)) for i in range(count)]
                assert [i for share in shares for i in share] == list(range(num_items))
                assert all(share.start % batch_size == 0 for share in shares)
                sizes = [-(-len(share) // batch_size) for share in shares]  # batches per shard
                assert max(sizes) - min(sizes) <= 1


def test_part_paths():
    assert part_path("out/d.jsonl", Shard()) == Path("out/d.jsonl")
    assert part_path("out/d.jsonl", Shard(2, 3)) == Path("out/d.part2of3.jsonl")
    assert part_paths("out/d.jsonl", 1) == [Path("out/d.jsonl")]
    assert part_paths("out/d.jsonl", 2) == [Path("out/d.part0of2.jsonl"), Path("out/d.part1of2.jsonl")]


def test_who_merges_the_parts():
    # the single process and torchrun's rank 0 merge; every other rank, and every --shard by hand, does not
    assert Shard().merges and Shard(0, 1, torchrun=True).merges and Shard(0, 4, torchrun=True).merges
    assert not Shard(1, 4, torchrun=True).merges and not Shard(0, 4).merges and not Shard(3, 4).merges



@pytest.mark.slow
def test_shards_in_separate_processes_merge_to_the_identical_map(runtime_onnx, voc_root, tmp_path, capsys):
    single = map_report_of_model_file(runtime_onnx, voc_root, **SINGLE)["runtime"]
    out = tmp_path / "d.jsonl"
    args = ["eval", "--model", str(runtime_onnx), "--data", str(voc_root), "--batch-size", "2", "--threads", "1",
            "--detections-out", str(out), "--json"]
    procs = [subprocess.Popen([sys.executable, "-m", "ssd_runtime.cli", *args, "--shard", f"{i}/3"], env=test_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    reports = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        reports.append(json.loads(stdout))
    # 8 images in 4 batches of 2 over 3 shards: 1, 1 and 2 batches
    assert [r["run"]["images"] for r in reports] == [2, 2, 4] and not any(r["merged"] for r in reports)
    parts = reports[0]["parts"]
    assert parts == [str(tmp_path / f"d.part{i}of3.jsonl") for i in range(3)]
    assert main(["eval", "--data", str(voc_root), "--detections", *parts[::-1], "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)["runtime"]
    assert merged["map"] == single["map"] and merged["classes"] == single["classes"]
    assert main(["eval", "--data", str(voc_root), "--detections", *parts[:2]]) == 2
    assert "shard(s) 2 of 3 not given or not finished" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_rank_0_merges_to_the_identical_map(runtime_onnx, voc_root, tmp_path):
    single = map_report_of_model_file(runtime_onnx, voc_root, **SINGLE)["runtime"]
    out = tmp_path / "d.jsonl"
    proc = run_process_group(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ssd_runtime.cli", "eval", "--model", str(runtime_onnx), "--data", str(voc_root), "--batch-size", "2",
         "--threads", "1", "--detections-out", str(out), "--json"],
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # rank 0 only: the others stay quiet
    assert report["detections"] == [str(tmp_path / f"d.part{i}of2.jsonl") for i in range(2)]
    assert report["runtime"]["map"] == single["map"] and report["runtime"]["classes"] == single["classes"]
