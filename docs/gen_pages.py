"""Pages generated at build time: the CLI reference from argparse, and the results page with its figures."""
from __future__ import annotations

import os
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal; keep the page stable

from multipill.cli import build_parser  # noqa: E402

parser = build_parser()
commands = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write("# Command line\n\nGenerated from the parser itself (`multipill COMMAND --help` prints the same).\n\n")
    page.write(f"```text\n{parser.format_help()}```\n\n")
    for name, sub in commands.items():
        page.write(f"## multipill {name}\n\n```text\n{sub.format_help()}```\n\n")

PAGES = {"results.md": ROOT / "benchmarks" / "RESULTS.md", "experiments.md": ROOT / "benchmarks" / "EXPERIMENTS.md",
         "changelog.md": ROOT / "CHANGELOG.md"}
LINKS = {"(RESULTS.md)": "(results.md)", "(EXPERIMENTS.md)": "(experiments.md)", "(../CHANGELOG.md)": "(changelog.md)",
         "(benchmarks/RESULTS.md)": "(results.md)"}
for name, source in PAGES.items():
    text = source.read_text(encoding="utf-8")
    for old, new in LINKS.items():
        text = text.replace(old, new)
    with mkdocs_gen_files.open(name, "w") as page:
        page.write(text)
for path in sorted((ROOT / "benchmarks" / "results").glob("*")):
    if path.is_file():
        with mkdocs_gen_files.open(f"results/{path.name}", "wb") as out:
            out.write(path.read_bytes())
