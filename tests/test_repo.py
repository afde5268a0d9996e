"""The repository's promises to a new user and to CI."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    return [line.split("#")[0].strip() for line in block if line.strip()]


def test_readme_starts_with_demo_and_test_commands():
    demo, test = _readme_commands()[:2]
    assert demo.startswith("pip install") and demo.endswith("snnc demo")
    assert test.startswith("pip install") and test.endswith("python -m pytest -q")


def test_ci_runs_exactly_the_readme_test_command():
    _, test = _readme_commands()[:2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci  # the very same line, not a paraphrase
    assert any("-eq 5" in line for line in ci)  # pytest's "no tests collected" is a failure
