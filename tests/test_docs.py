"""The documentation as a user meets it: no path outside the repository in any tracked file, a
README that fits a front door, links that resolve, and reference pages in the third person."""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

# Built from pieces so that this file does not match its own patterns.
_SLASH = "/"
ABSOLUTE = re.compile(
    r"(?<![\w.:/-])(?:" + "|".join(re.escape(_SLASH + d + _SLASH)
                                   for d in ("work", "home", "root", "tmp", "Users")) + r")"
    r"|\b[A-Z]:" + re.escape("\\") + r"(?=\w)"
    r"|" + re.escape(".." + _SLASH + "shared"))
# The CI script points TINYCNN_DATA at the CI machine's MNIST copy beside the checkout.
OUTSIDE_ALLOWED = {".ci/run": "..%sshared" % _SLASH}
BINARY_SUFFIXES = {".pt", ".png", ".jpg", ".gif", ".db", ".pdf"}
FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd)\b|\b(?i:me|my|mine|we|we're|we've|us|our|ours)\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.split("\0") if f]


def text_of(rel: str) -> str | None:
    path = REPO / rel
    if path.suffix in BINARY_SUFFIXES or not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def prose_of(page: Path) -> str:
    """The page with its code blocks blanked (they quote commands and output, not prose);
    line numbers stay as they are."""
    return re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), page.read_text(),
                  flags=re.S)


def doc_pages() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_no_tracked_file_names_a_path_outside_the_repository():
    bad = []
    for rel in tracked_files():
        text = text_of(rel)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in ABSOLUTE.finditer(line):
                if OUTSIDE_ALLOWED.get(rel) == m.group(0):
                    continue
                bad.append(f"{rel}:{n}: {line.strip()[:120]}")
    assert not bad, "absolute or outside-the-repo paths:\n" + "\n".join(bad[:30])


def test_the_pattern_catches_what_it_should_and_spares_urls():
    hits = ["x " + _SLASH + "work" + _SLASH + "main", "cwd: " + _SLASH + "tmp" + _SLASH + "x",
            "C:" + "\\" + "Users", "see .." + _SLASH + "shared" + _SLASH + "data",
            "'" + _SLASH + "home" + _SLASH + "me'"]
    misses = ["https://example.org" + _SLASH + "tmp" + _SLASH + "x", "outputs/multirun/x",
              "sqlite:///outputs/optuna.db", "tests/fixtures/old_run", "a/tmp/b"]
    assert all(ABSOLUTE.search(s) for s in hits), [s for s in hits if not ABSOLUTE.search(s)]
    assert not any(ABSOLUTE.search(s) for s in misses), [s for s in misses if ABSOLUTE.search(s)]


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_relative_links_in_the_docs_resolve():
    bad = []
    for page in doc_pages():
        if not page.exists():
            continue
        text = prose_of(page)
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor on the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                bad.append(f"{page.relative_to(REPO)}: {target}")
    assert not bad, "links to missing files:\n" + "\n".join(bad)


def test_docs_are_written_in_the_third_person():
    bad = []
    for page in doc_pages():
        if not page.exists():
            continue
        text = prose_of(page)
        for n, line in enumerate(text.splitlines(), 1):
            prose = re.sub(r"`[^`]*`", "", line)  # code spans quote commands and output
            if m := FIRST_PERSON.search(prose):
                bad.append(f"{page.relative_to(REPO)}:{n}: '{m.group(0)}' in {line.strip()[:100]}")
    assert not bad, "first person in the documentation:\n" + "\n".join(bad)
