"""Every relative link in README.md and docs/*.md leads to a file or folder in the repository.

Links are markdown's ``[text](target)``, ``![alt](target)`` and ``[label]: target``, outside
code blocks and inline code. Web links (http, https, mailto) and pure ``#anchors`` are not
checked; a ``?query`` is cut off the target before the check; a ``#fragment`` of a link to a
markdown file must name one of its headings (as GitHub makes anchors of them); a target is
relative to the folder of the file that holds it and must stay inside the repository. One
test per file, which lists all of that file's broken links at once.

KNOWN_BROKEN lists links known to be broken while a fix is under way: while only those are
broken the test is reported as xfail (with the list); a broken link not in it fails the test,
and so does an entry that is no longer broken (delete it).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # measurements too
# [text](target "title") and ![alt](target); target possibly in <...>
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)  # [label]: target
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,}).*?^\1\2[`~]*\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+).+?\1", re.DOTALL)
# (file, target): README's rewrite is under way; the study's default_run report is not in docs/
KNOWN_BROKEN: set[tuple[str, str]] = set()
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link in a markdown text, code left out."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731 - keeps line numbers
    text = INLINE_CODE.sub(blank, FENCE.sub(blank, text))
    found = []
    for pattern in (INLINE, REFERENCE):
        for match in pattern.finditer(text):
            target = match.group(1).strip("<>")
            found.append((text.count("\n", 0, match.start()) + 1, target))
    return sorted(found)


HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731 - no headings in code
    return {anchor(h) for h in HEADING.findall(FENCE.sub(blank, doc.read_text()))}


def broken_links(doc: Path, root: Path = ROOT) -> list[tuple[int, str, str]]:
    """(line, target, why) of every relative link in doc that leads nowhere in the repository."""
    broken = []
    for line, target in link_targets(doc.read_text()):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        relative = re.split(r"[#?]", target, maxsplit=1)[0]
        resolved = (doc.parent / relative).resolve()
        fragment = target.split("#", 1)[1] if "#" in target else None
        if not resolved.exists():
            broken.append((line, target, "no such file"))
        elif not resolved.is_relative_to(root):
            broken.append((line, target, "outside the repository"))
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append((line, target, "no such heading"))
    return broken


def test_the_link_finder():
    text = (
        "see [a](docs/a.md#part) and ![fig](<figs/b c.png> 'title'), [web](https://x.org/y)\n"
        "```bash\n[not](a/link.md)\n```\n`[nor](this.md)` [top](#top)\n[ref]: ../c.md\n"
    )
    assert link_targets(text) == [
        (1, "docs/a.md#part"),
        (1, "figs/b c.png"),
        (1, "https://x.org/y"),
        (5, "#top"),
        (6, "../c.md"),
    ]


def test_anchors_as_github_makes_them(tmp_path):
    assert anchor("The study: do the heads compete or cooperate?") == (
        "the-study-do-the-heads-compete-or-cooperate"
    )
    assert anchor("Extras in detail") == "extras-in-detail"
    page = tmp_path / "page.md"
    page.write_text("# Top\n```\n# not a heading\n```\n## Two words\n")
    assert anchors(page) == {"top", "two-words"}
    (tmp_path / "r.md").write_text("[a](page.md#two-words) [b](page.md#not-a-heading)\n")
    assert broken_links(tmp_path / "r.md", root=tmp_path) == [
        (1, "page.md#not-a-heading", "no such heading")
    ]


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc):
    name = str(doc.relative_to(ROOT))
    broken = broken_links(doc)
    new = [
        f"{name}:{line}: {target} ({why})"
        for line, target, why in broken
        if (name, target) not in KNOWN_BROKEN
    ]
    assert not new, f"{len(new)} broken link(s):\n" + "\n".join(new)
    fixed = {t for d, t in KNOWN_BROKEN if d == name} - {target for _, target, _ in broken}
    assert not fixed, f"in KNOWN_BROKEN but not broken now, delete: {sorted(fixed)}"
    if broken:
        known = [f"{name}:{line}: {target}" for line, target, _ in broken]
        pytest.xfail(f"known broken link(s), see KNOWN_BROKEN: {'; '.join(known)}")
