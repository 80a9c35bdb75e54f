"""The README and docs/ stay true: links and anchors resolve, named scripts exist, quoted flags are accepted.

Checked on every Markdown page of the front page and the reference (`README.md`, `docs/*.md`, and the
pointer READMEs beside the code):
- every relative link resolves to a file, and its `#anchor` to a heading of that file (GitHub's rule);
- every project script path quoted in them exists;
- every `--flag` quoted for a project script is in that script's `--help`: a flag inside a command that
  runs the script, or quoted in a paragraph that names the script.
"""

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "luffy/cpu/README.md", ROOT / "eval_scripts/README.md"]
)
SCRIPT_DIRS = ("data", "eval_scripts", "exp_scripts", "benchmarks", "scripts", ".ci")
# a project script named in the text: data/prepare_train.py, exp_scripts/train.sh, .ci/run, ...
_DIRS = "|".join(re.escape(d) for d in SCRIPT_DIRS)
SCRIPT_RE = re.compile(rf"(?<![\w./-])((?:{_DIRS})/[\w.-]+\.(?:py|sh)|\.ci/run)\b")
FLAG_RE = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _strip_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _strip_code_blocks(page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        a = github_anchor(m.group(1))
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return frozenset(out)


def test_anchor_rule_on_hand_made_headings():
    assert github_anchor("What the CPU rehearsal covers, and what only a GPU run can") == (
        "what-the-cpu-rehearsal-covers-and-what-only-a-gpu-run-can"
    )
    assert github_anchor("How LUFFY plugs into veRL 0.9.1") == "how-luffy-plugs-into-verl-091"
    assert github_anchor("The `hf_cpu` rollout server") == "the-hf_cpu-rollout-server"
    assert github_anchor("Comparing with LUFFY's table") == "comparing-with-luffys-table"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_and_anchors_resolve(page: Path):
    bad = []
    for m in LINK_RE.finditer(_strip_code_blocks(page.read_text())):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{_page_id(page)}: broken links:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_named_scripts_exist(page: Path):
    missing = sorted({s for s in SCRIPT_RE.findall(page.read_text()) if not (ROOT / s).exists()})
    assert not missing, f"{_page_id(page)} names scripts that do not exist: {missing}"


@cache
def help_text(script: str) -> str:
    cmd = [sys.executable, script, "--help"] if script.endswith(".py") else ["bash", script, "--help"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{script} --help exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def _commands(text: str):
    """(script, flags) for every command that runs a project script: its flags up to the command's end."""
    for line in re.split(r"\n(?!\s)|&&|\|\||;|\|(?=\s)", re.sub(r"\\\n", " ", text)):
        for m in SCRIPT_RE.finditer(line):
            tail = line[m.end() :]
            nxt = SCRIPT_RE.search(tail)
            tail = re.split(r"`|\(", tail[: nxt.start()] if nxt else tail)[0]
            yield m.group(1), set(FLAG_RE.findall(tail))


def quoted_flags(text: str) -> dict[str, set[str]]:
    """script -> flags quoted for it: in a command running it, or in code spans of a paragraph naming it."""
    out: dict[str, set[str]] = {}
    code_blocks = re.findall(r"^```.*?^```", text, flags=re.M | re.S)
    spans = [s for para in re.split(r"\n\s*\n", _strip_code_blocks(text)) for s in re.findall(r"`([^`]+)`", para)]
    for chunk in [*code_blocks, *spans]:
        for script, flags in _commands(chunk):
            out.setdefault(script, set()).update(flags)
    current = None  # the script the text is about: the last one a block or paragraph named alone
    for block in re.split(r"\n\s*\n(?![^`]*```\n)|(?=^```)", text, flags=re.M):
        if block.lstrip().startswith("#"):
            current = None  # a new section: the text is about another script until one is named
        named = {s for s in set(SCRIPT_RE.findall(block)) | _short_names(block) if s.endswith(".py")}
        if len(named) > 1:
            current = None
            continue
        current = next(iter(named)) if named else current
        if block.lstrip().startswith("```") or current is None:
            continue
        spans = [s for s in re.findall(r"`([^`]+)`", block) if FLAG_RE.match(s)]  # spans that start with a flag
        lone = {f for s in spans for f in FLAG_RE.findall(s)}
        out.setdefault(current, set()).update(lone)
    return out


def _short_names(para: str) -> set[str]:
    """Scripts named by file name alone (`score.py`), resolved in the script folders."""
    out = set()
    for name in re.findall(r"`([\w-]+\.(?:py|sh))`", para):
        out.update(str(p.relative_to(ROOT)) for d in SCRIPT_DIRS for p in [ROOT / d / name] if p.exists())
    return out


def test_quoted_flags_parser_on_hand_made_text():
    text = (
        "Run `python eval_scripts/score.py out.jsonl --skip_bad` or\n\n```bash\n"
        "python data/prepare_train.py --input x \\\n    --val_size 10"
        " && python eval_scripts/score.py y --summary_out s\n```\n\n"
        "`score.py` takes `--skip_bad`; `pip install --no-deps` is pip's.\n"
    )
    got = quoted_flags(text)
    assert got["eval_scripts/score.py"] == {"--skip_bad", "--summary_out"}
    assert got["data/prepare_train.py"] == {"--input", "--val_size"}
    assert "--no-deps" not in set().union(*got.values())


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_quoted_flags_are_accepted_by_their_script(page: Path):
    bad = []
    for script, flags in sorted(quoted_flags(page.read_text()).items()):
        if not (ROOT / script).exists() or script == ".ci/run" or not flags:
            continue
        helped = set(FLAG_RE.findall(help_text(script)))
        bad += [f"{script} {flag}" for flag in sorted(flags - helped)]
    assert not bad, f"{_page_id(page)} quotes flags their script's --help does not list:\n" + "\n".join(bad)
