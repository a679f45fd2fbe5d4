"""Every ```python block of docs/*.md and README.md runs, on the demo data written in a tmp dir.

The blocks of one page run in order, in one namespace (a page reads like a session), in a fresh
Python process whose working directory holds ``demo-data/`` exactly as ``cloudwds demo`` writes it
— so a page cannot lean on what another page or this test process imported or configured, and
``install_as_webdataset()`` on the migration page cannot leak into other tests. A block that needs
a bucket or a cluster is preceded by an HTML comment ``<!-- skip: why -->``; the skips are counted
and kept few. Tracebacks name the page and its line (``docs/quickstart.md:42``).

Also checked: every page under docs/ is in mkdocs.yml's navigation (a page left out of it would
be built but unreachable), and the README's module table matches the package tree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]

_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"^<!--\s*skip:\s*(.+?)\s*-->\s*$")

# Fewer blocks than this across docs/ and README.md would mean the extraction broke.
MIN_BLOCKS_RUN = 20
# Skips are for blocks that need a bucket, a cluster or a package the tests don't install.
MAX_SKIPS = 6


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None  # the reason, or None when it runs


def extract_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The ```python blocks of a Markdown file, each with the skip reason of the comment just
    before its fence (blank lines between are allowed)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    blocks: list[Block] = []
    pending_skip: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        skip = _SKIP.match(line.strip())
        fence = _FENCE.match(line.strip())
        if skip:
            pending_skip = skip.group(1)
        elif fence:
            lang = fence.group(1)
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if lang == "python":
                code = "\n".join(lines[start:j]) + "\n"
                blocks.append(Block(rel, start + 1, code, pending_skip))
            pending_skip = None
            i = j
        elif line.strip():
            pending_skip = None
        i += 1
    return blocks


# Runs a page's blocks in order in one namespace; compiled with the page's name and line so a
# traceback points into the Markdown. Prints one JSON line per block that ran.
_RUNNER = r"""
import json, sys
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for block in blocks:
    code = "\n" * (block["line"] - 1) + block["code"]
    exec(compile(code, block["page"], "exec"), namespace)
    print("BLOCK-OK " + json.dumps(block["line"]), flush=True)
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``demo-data/`` as ``cloudwds demo`` writes it (4,000 samples, 8 shards)."""
    from cloudwds.demo import write_dataset

    root = tmp_path_factory.mktemp("docs")
    (root / "demo-data").mkdir()
    write_dataset(str(root / "demo-data" / "train-%06d.tar"), 4000, 500)
    return root


def _run_page(blocks: list[Block], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The docs' blocks run on the demo data only: no cache directory or rewrite from the
    # environment of whoever runs the tests leaks in.
    for name in ("WDS_CACHE", "WDS_CACHE_SIZE", "WDS_REWRITE", "GOPEN_REWRITE"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["XDG_CACHE_HOME"] = str(cwd / "xdg-cache")
    payload = json.dumps([{"page": b.page, "line": b.line, "code": b.code} for b in blocks])
    return subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=payload,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


PAGES_WITH_CODE = [p for p in PAGES if any(b.skip is None for b in extract_blocks(p))]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_code_blocks_run(page: Path, workdir: Path, tmp_path: Path) -> None:
    blocks = [b for b in extract_blocks(page) if b.skip is None]
    # Each page gets its own copy of the folder layout: a page that writes files (shards,
    # indexes) must not change what the next page sees. The demo shards are linked, not copied.
    (tmp_path / "demo-data").mkdir()
    for shard in sorted((workdir / "demo-data").iterdir()):
        os.link(shard, tmp_path / "demo-data" / shard.name)
    result = _run_page(blocks, tmp_path)
    ran = [
        int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("BLOCK-OK")
    ]
    assert result.returncode == 0, (
        f"{page.name}: blocks at lines {ran} ran, the next one failed:\n{result.stderr[-4000:]}"
    )
    assert ran == [b.line for b in blocks]


def test_blocks_ran_and_skips_are_few_and_explained() -> None:
    blocks = [b for p in PAGES for b in extract_blocks(p)]
    ran = [b for b in blocks if b.skip is None]
    skipped = [b for b in blocks if b.skip is not None]
    print(f"\ndocs code blocks: {len(ran)} run, {len(skipped)} skipped")
    for b in skipped:
        print(f"  skipped {b.page}:{b.line}: {b.skip}")
    assert len(ran) >= MIN_BLOCKS_RUN
    assert len(skipped) <= MAX_SKIPS
    assert all(len(b.skip or "") >= 8 for b in skipped)  # a reason, not just "skip"


def test_extract_blocks_reads_fences_and_skip_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- skip: needs a bucket -->\n\n```python\ny = 2\n```\n"
        "<!-- skip: not for bash -->\n```bash\nls\n```\n\n```python\nz = 3\n```\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page, root=tmp_path)
    assert [(b.line, b.code, b.skip) for b in blocks] == [
        (4, "x = 1\n", None),
        (10, "y = 2\n", "needs a bucket"),
        (18, "z = 3\n", None),  # the skip before the bash block does not carry over
    ]


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    if isinstance(node, list):
        return [p for v in node for p in _nav_pages(v)]
    return []


def test_every_docs_page_is_in_the_navigation() -> None:
    # mkdocs.yml holds no Python tags, so the safe loader reads it.
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = sorted(_nav_pages(config["nav"]))
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert nav == pages


def test_readme_module_table_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set()
    for row in re.findall(r"^\| (`cloudwds/[^|]*)\|", readme, flags=re.M):
        for path in re.findall(r"`([^`]+)`", row):
            path = path if path.startswith("cloudwds/") else "cloudwds/" + path
            named.add(path.rstrip("/"))
    # Public modules and packages; private ones (`_name`), `__init__` and `__main__` are not listed.
    tree = {
        f"cloudwds/{p.name}"
        for p in (ROOT / "cloudwds").iterdir()
        if not p.name.startswith("_")
        and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    assert named <= tree, sorted(named - tree)
    assert tree <= named, sorted(tree - named)
