"""The docs stay true: every `stadapt ...` command line quoted in README.md and docs/**/*.md names a command
that exists with options that exist (checked in-process against the click commands of the Typer app, at the
--help level: nothing runs), the README stays a front page, no doc points outside the repository, and the
architecture page names every folder of the package."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from stadapt.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
ARCHITECTURE = ROOT / "docs" / "reference" / "architecture.md"

FENCE = re.compile(r"^[ \t]*(```+|~~~+)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"(^|\s)#.*$")
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|<[^>]+>")  # COMMAND, <command>: any command
LAUNCHERS = {"torchrun", "python", "python3"}


@dataclass(frozen=True)
class Quoted:
    where: str  # file:line
    text: str  # the command line as quoted (continuations joined, comment dropped)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _block_commands(body: str, start_line: int, name: str) -> list[Quoted]:
    """Command lines of a fenced block: `\\` continuations joined; lines that do not start a command skipped."""
    found = []
    lines = body.split("\n")
    i = 0
    while i < len(lines):
        first = i
        line = lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        stripped = line.strip()
        if stripped.startswith("$ "):
            stripped = stripped[2:]
        if _is_command(stripped):
            found.append(Quoted(f"{name}:{start_line + first}", stripped))
    return found


def _is_command(text: str) -> bool:
    words = text.split()
    if not words:
        return False
    head = words[0]
    return head == "stadapt" or head.endswith("/stadapt") or (head in LAUNCHERS and "stadapt" in words)


def quoted_commands(path: Path, root: Path = ROOT) -> list[Quoted]:
    """Every command line that quotes `stadapt` in a Markdown file: fenced code blocks and inline code."""
    text = path.read_text(encoding="utf-8")
    name = str(path.relative_to(root))
    found: list[Quoted] = []
    prose = list(text)
    for block in FENCE.finditer(text):
        found += _block_commands(block.group(2), _line_of(text, block.start(2)), name)
        for k in range(block.start(), block.end()):  # blank the block (keeping line numbers) for the inline pass
            if prose[k] != "\n":
                prose[k] = " "
    rest = "".join(prose)
    for span in INLINE.finditer(rest):
        code = " ".join(span.group(1).split())  # a span may wrap over lines
        if _is_command(code):
            found.append(Quoted(f"{name}:{_line_of(rest, span.start())}", code))
    return found


def _words(command: str) -> list[str]:
    """The words after `stadapt`, with comments, `[...]` optional-part brackets and `...` ellipses removed."""
    words = shlex.split(COMMENT.sub("", command))  # a `#` that starts a word starts a comment
    for k, word in enumerate(words):
        if word == "stadapt" or word.endswith("/stadapt"):
            rest = words[k + 1:]
            break
    else:
        raise AssertionError(f"no `stadapt` word in {command!r}")
    out = []
    for word in rest:
        word = word.strip("[]")
        if word and word not in ("...", "…"):
            out.append(word)
    return out


def _option_names(command: Any, ctx: Any) -> set[str]:
    names: set[str] = set()
    for param in command.get_params(ctx):
        if param.param_type_name == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def check_command(command_line: str) -> str | None:
    """None if the command line parses at --help level, else what is wrong with it."""
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="stadapt", **(command.context_settings or {}))
    path = ["stadapt"]
    words = _words(command_line)
    while getattr(command, "commands", None):
        options = _option_names(command, ctx)
        while words and words[0].startswith("-"):  # options of the group itself (--version, -h)
            if words[0].split("=", 1)[0] not in options:
                return f"`{' '.join(path)}` has no option {words[0]}"
            words = words[1:]
        if not words:
            return None  # the group named alone (`stadapt recipe`) or with its own options
        sub = command.commands.get(words[0])
        if sub is None and PLACEHOLDER.fullmatch(words[0]):  # `stadapt COMMAND --help`: valid for every one
            for name in command.commands:
                problem = check_command(shlex.join([*path, name, *words[1:]]))
                if problem:
                    return f"{words[0]} = {name}: {problem}"
            return None
        if sub is None:
            return f"`{' '.join(path)}` has no command {words[0]!r} (it has: {', '.join(command.commands)})"
        path.append(words[0])
        ctx = sub.context_class(sub, info_name=words[0], parent=ctx, **(sub.context_settings or {}))
        command, words = sub, words[1:]
    options = _option_names(command, ctx)
    for word in words:
        if word == "--":
            break
        if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-\d[\d.e+-]*", word):
            name = word.split("=", 1)[0]
            if name not in options:
                return f"`{' '.join(path)}` has no option {name} (it has: {', '.join(sorted(options))})"
    return None


ALL_QUOTED = [q for path in DOCS for q in quoted_commands(path)]


def test_the_docs_quote_commands() -> None:
    """The extraction finds the commands (a parser that finds nothing would check nothing)."""
    files = {q.where.split(":")[0] for q in ALL_QUOTED}
    assert "README.md" in files and len(ALL_QUOTED) > 50
    texts = [q.text for q in ALL_QUOTED]
    assert any(t.startswith("torchrun") for t in texts)
    assert any(t.startswith("stadapt import-checkpoint") and "--backbone-weights" in t for t in texts)  # joined `\`


@pytest.mark.parametrize("quoted", ALL_QUOTED, ids=[q.where for q in ALL_QUOTED])
def test_quoted_command_exists(quoted: Quoted) -> None:
    problem = check_command(quoted.text)
    assert problem is None, f"{quoted.where}: {quoted.text!r}: {problem}"


@pytest.mark.parametrize("line, problem", [
    ("stadapt train recipes/x.yaml --resume", None),
    ("stadapt eval RUN --views 2x3 -q  # the latest run", None),
    ("torchrun --nproc_per_node 8 --no-python stadapt train R.yaml --auto-resume", None),
    ("python -m stadapt eval --which best", None),
    (".venv/bin/stadapt backbones --check clip", None),
    ("stadapt push <run> --repo ORG/NAME [--private]", None),
    ("stadapt recipe schema --out recipe.schema.json", None),
    ("stadapt prepare-data", None),
    ("stadapt --version", None),
    ("stadapt COMMAND --help", None),
    ("stadapt recipe <command> -h", None),
    ("stadapt COMMAND --out x", "has no option --out"),
    ("stadapt train R.yaml --resume-from-step 3", "has no option --resume-from-step"),
    ("stadapt eval --view 2x3", "has no option --view"),
    ("stadapt evaluate RUN", "has no command 'evaluate'"),
    ("stadapt prepare-data kinetics --root X", "has no command 'kinetics'"),
    ("stadapt recipe show R.yaml --params", "has no option --params"),
    ("torchrun --nproc_per_node 2 -m stadapt train R --stop-after=5 --bogus", "has no option --bogus"),
])
def test_the_checker_finds_wrong_commands(line: str, problem: str | None) -> None:
    """A renamed option or command in a doc fails the test above: the checker itself, on known lines."""
    found = check_command(line)
    if problem is None:
        assert found is None, found
    else:
        assert found is not None and problem in found


def test_extraction_of_blocks_and_inline(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "x.md"
    doc.parent.mkdir()
    doc.write_text(
        "Run `stadapt eval\n--views 1x3` or `stadapt.load_model` (not a command).\n\n"
        "```bash\n"
        "stadapt import-checkpoint --checkpoint c.pth \\\n    --out k400 --dataset k400  # a comment\n"
        "pip install stadapt\n"
        "torchrun --nproc_per_node 8 --no-python stadapt train R.yaml\n"
        "```\n")
    found = [q.text for q in quoted_commands(doc, tmp_path)]
    assert found == [
        "stadapt import-checkpoint --checkpoint c.pth --out k400 --dataset k400  # a comment",
        "torchrun --nproc_per_node 8 --no-python stadapt train R.yaml",
        "stadapt eval --views 1x3",
    ]


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the details into docs/"
    text = "\n".join(lines)
    assert "make quickstart" in text and "make test" in text


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_docs_point_only_inside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for stale in ("DESIGN.md", "huggingface-cli"):
        assert stale not in text, f"{path.relative_to(ROOT)} mentions {stale}"


def _package_folders() -> list[str]:
    package = ROOT / "stadapt"
    return sorted(str(d.relative_to(package)) for d in package.rglob("*")
                  if d.is_dir() and (d / "__init__.py").exists())


def test_architecture_page_names_every_folder() -> None:
    assert len(_package_folders()) >= 10
    lines = ARCHITECTURE.read_text(encoding="utf-8").splitlines()
    missing = [folder for folder in _package_folders()
               if not any(re.search(rf"(?<![\w/]){re.escape(folder)}/", line) for line in lines)]
    assert not missing, f"{ARCHITECTURE.relative_to(ROOT)} does not name: {', '.join(missing)}"


def test_every_module_the_architecture_page_names_exists() -> None:
    """Each line of the package tables is true as far as a reader can check: the modules a folder's row
    names (`name.py`) are in that folder, and the top-level modules the second table names exist."""
    package = ROOT / "stadapt"
    wrong = []
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        row = re.match(r"\|\s*`([\w/]+)/`\s*\|(.*)\|\s*$", line)
        where = package / row.group(1) if row else package
        if row is None and not re.match(r"\|\s*`[\w.]+\.py`", line):
            continue
        text = row.group(2) if row else line.split("|")[1]
        for name in re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", text):
            if not (where / name).is_file() and not (package / name).is_file() and "/" not in name:
                wrong.append(f"{where.relative_to(ROOT)}/{name}")
    assert not wrong, f"{ARCHITECTURE.relative_to(ROOT)} names modules that do not exist: {', '.join(wrong)}"
