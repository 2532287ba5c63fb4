import csv
import json
import shutil
import subprocess
import sys

from multipill.cli import _classifier, build_parser, format_table, main


def test_train_predict_evaluate(packs, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["train", str(packs), "--out", str(model), "--no-fusion", "--epochs", "3",
                 "--image-size", "64", "--views", "1"]) == 0
    assert (model / "multipill.json").exists() and (model / "checkpoints" / "checkpoint.json").exists()
    folder = tmp_path / "inbox"
    shutil.copytree(packs / "test" / "Neozep", folder)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder), "--model", str(model), "--out", str(out)]) == 1  # one bad file
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 11
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and "corrupt.jpg" in bad[0]["error"]
    assert all(r["label"] for r in rows if not r["error"])
    # stopped part-way (three rows kept, the fourth torn by the stop), then resumed: each photo once, same answers
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:10])
    assert main(["predict", str(folder), "--model", str(model), "--out", str(out), "--resume",
                 "--batch-size", "4"]) == 1
    assert "3 photos already answered" in capsys.readouterr().out
    resumed = list(csv.DictReader(out.open()))
    assert sorted(r["image"] for r in resumed) == sorted(r["image"] for r in rows)
    assert {r["image"]: r["label"] for r in resumed} == {r["image"]: r["label"] for r in rows}
    lines_out = tmp_path / "preds.jsonl"
    main(["predict", str(folder), "--model", str(model), "--out", str(lines_out), "--batch-size", "3"])
    assert [json.loads(line)["image"] for line in lines_out.read_text().splitlines()] == [r["image"] for r in rows]
    js = tmp_path / "preds.json"
    main(["predict", str(folder / "0000.png"), "--model", str(model), "--out", str(js)])
    assert json.loads(js.read_text())[0]["label"]
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(packs), "--model", str(model), "--split", "test", "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "abstention" in printed and json.loads(report.read_text())["n"] == 40
    main(["predict", str(folder / "0000.png"), "--model", str(model)])
    printed = capsys.readouterr().out
    assert "pharmacist" in printed and ("Product card:" in printed or "ABSTAINED" in printed)
    plots = tmp_path / "plots"
    assert main(["evaluate", str(packs), "--model", str(model), "--split", "test", "--plots", str(plots)]) == 0
    assert {p.name for p in plots.iterdir()} == {"confusion.png", "reliability.png", "risk_coverage.png"}


def test_ocr_options_from_the_command_line():
    def options(*flags):
        return _classifier(build_parser().parse_args(["train", "data", "--out", "m", *flags])).ocr_options
    assert options() is None  # the engine's own defaults
    assert options("--ocr-det-side", "448") == {"det_side": 448}
    assert options("--ocr-det-side", "448", "--ocr-enlarge-to", "500") == {"enlarge_to": 500, "det_side": 448}


def test_keypoint_photos_from_the_command_line():
    def photos(*flags):
        return _classifier(build_parser().parse_args(["train", "data", "--out", "m", *flags])).keypoint_photos
    assert photos() == 0 and photos("--keypoint-photos", "8") == 8


def test_clear_errors_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "--out", str(tmp_path / "m")]) == 2
    assert "holds no files" in capsys.readouterr().err
    assert main(["predict", str(empty), "--model", str(tmp_path / "missing")]) == 2


def test_demo_quick_runs_offline_as_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "multipill", "demo", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["fused"]["fused"]["accuracy"] > results["image-only"]["image"]["accuracy"]
    assert (tmp_path / "branches.png").stat().st_size > 1000


def test_table_explains_when_every_answer_is_withheld():
    branch = {"accuracy": 0.9, "macro": {"f1": 0.9}, "groups": []}
    result = {"image": branch, "n": 10, "with_text": 0, "fusion": {"decision": "image-only"}, "calibration": {},
              "abstention": {"threshold": 1.0, "coverage": 0.0, "answered_accuracy": None,
                             "abstained_as_novel": 0}}
    assert "every answer withheld: no answer reached the confidence threshold" in format_table(result)
    result["abstention"]["withhold_all_reason"] = "no confidence threshold reached target_accuracy=0.99"
    assert "withheld: no confidence threshold reached target_accuracy=0.99" in format_table(result)
    result["abstention"]["abstained_as_novel"] = 10
    assert "withheld: every image was flagged as an unknown product" in format_table(result)
    result["abstention"].update(coverage=0.5, answered_accuracy=1.0)
    assert "withheld" not in format_table(result)


def test_training_killed_mid_run_resumes_to_the_same_model(packs, tmp_path):
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    def command(out):
        return [sys.executable, "-m", "multipill", "train", str(packs), "--out", str(out), "--no-fusion",
                "--freeze", "partial", "--epochs", "25", "--patience", "25", "--image-size", "64", "--views", "1"]

    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    run = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint.json"
    while run.poll() is None:  # SIGKILL once three epochs are checkpointed: no chance to clean up
        try:
            if json.loads(checkpoint.read_text())["progress"]["epoch"] >= 3:
                run.send_signal(signal.SIGKILL)
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert run.wait() == -signal.SIGKILL, "training ended before it could be killed"
    done = json.loads(checkpoint.read_text())["progress"]
    assert not (tmp_path / "killed" / "multipill.json").exists()  # no model was written by the killed run
    subprocess.run(command(tmp_path / "killed"), check=True, capture_output=True)  # the same command again
    whole, resumed = (json.loads((tmp_path / d / "multipill.json").read_text()) for d in ("whole", "killed"))
    assert len(resumed["image_history"]) == 25 and resumed["image_history"][:done["epoch"]] == done["history"]
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("image."))  # the same weights as uninterrupted


def test_two_processes_through_accelerate_train_one_model(packs, tmp_path):
    """`accelerate launch` with two processes on the CPU (gloo) trains the model one process trains: same classes,
    accuracy within noise, OCR shared out, and one saved model written once."""
    import os
    from multipill import PillClassifier
    args = ["train", str(packs), "--image-size", "96", "--epochs", "15", "--views", "1",
            "--ocr-cache", str(tmp_path / "ocr")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    two = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
                          "-m", "multipill", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=900, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    out = two.stdout + two.stderr
    assert "training in 2 processes (DistributedType.MULTI_CPU, gloo)" in out
    assert "(process 1)" in out  # the second process read its share of the photos
    assert out.count("saved to") == 1
    one = subprocess.run([sys.executable, "-m", "multipill", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=900, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "checkpoint.json", "checkpoint.safetensors"]
    a, b = PillClassifier.load(tmp_path / "two"), PillClassifier.load(tmp_path / "one")
    assert a.classes_ == b.classes_
    # 40 test photos: a binomial standard error of about 0.07, so 0.2 is three of them
    ra, rb = a.evaluate(packs, split="test"), b.evaluate(packs, split="test")
    assert abs(ra["image"]["accuracy"] - rb["image"]["accuracy"]) <= 0.2, (ra["image"], rb["image"])
