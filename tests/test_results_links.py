"""The results folder holds exactly what the results pages cite, and every link in the project's pages resolves."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "RESULTS.md",
         ROOT / "benchmarks" / "EXPERIMENTS.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")
GENERATED = {"results.md", "experiments.md", "changelog.md", "reference/cli.md"}  # docs pages made at build time


def targets(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(page.read_text(encoding="utf-8"))]


def test_every_link_resolves():
    broken = []
    for page in PAGES:
        for target in targets(page):
            path = target.split("#")[0]
            if not path or re.match(r"[a-z]+:", path):
                continue
            if page.is_relative_to(ROOT / "docs"):
                rel = (page.parent / path).resolve().relative_to((ROOT / "docs").resolve()).as_posix() \
                    if (page.parent / path).resolve().is_relative_to((ROOT / "docs").resolve()) else None
                if rel in GENERATED or (rel or "").startswith("results/") and (RESULTS / rel[8:]).exists():
                    continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_result_file_is_cited():
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    uncited = [p.name for p in RESULTS.iterdir() if p.is_file() and f"results/{p.name}" not in text]
    assert not uncited, f"files in benchmarks/results/ that no page cites (remove them or cite them): {uncited}"


def test_no_page_speaks_of_sessions():
    for page in PAGES:
        assert not re.search(r"\bsessions?\b", page.read_text(encoding="utf-8"), re.I), page


def test_every_result_json_says_how_it_was_made():
    import json
    for path in RESULTS.glob("*.json"):
        record = json.loads(path.read_text())
        assert record["machine"]["date"] and record["machine"]["cores"], path.name
        assert record["command"].startswith("python benchmarks/"), path.name
        assert record.get("commit") or record.get("recorded_in"), path.name  # run's commit, or the one that added it
