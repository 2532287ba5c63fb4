from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text().split("## Two commands")[1].split("\n## ")[0]
    return [block.split("\n")[1] for block in text.split("```bash")[1:]]


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    demo, tests = _commands()
    assert "multipill demo" in demo and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()
