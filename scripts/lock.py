"""constraints.txt: the versions `make` installs, and the one rule every line of it follows.

    python scripts/lock.py [FILE]           write FILE (default: constraints.txt beside this script's
                                            folder) from the environment of the running interpreter
    python scripts/lock.py --check [FILE]   check FILE: exit 1 listing each line that breaks the rule

`make lock` builds a throw-away virtual environment, installs `.[all,dev]` there without constraints (the
newest releases) and runs this script with that environment's interpreter. The lock holds every
distribution `stadapt[all,dev]` pulls in there (its requirements, followed through their own), pinned as
`pip list --format=freeze --exclude-editable` reports them: `name==version`, never a direct reference
(`name @ file:///...`, which `pip freeze` writes for a wheel installed from a local folder and which no
other machine can install). The comment lines at the top of the existing file are kept. The file is
checked before it replaces the old one, atomically: a lock that breaks the rule is never written.

The rule (tests/test_packaging.py checks the committed file with it): a line is blank, a comment, or
`name==version` with an optional environment marker after `;`: no URL or path, no extras, no option
(`-e`, `-r`, `--index-url`), no other operator, no wildcard, no local version label (`+cpu`: a build that
only some indexes have).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PROJECT = "stadapt"
EXTRAS = ("all", "dev")  # what `make install` installs: `pip install -c constraints.txt -e '.[all,dev]'`
_INLINE_COMMENT = re.compile(r"\s+#.*$")


def line_problem(line: str) -> str | None:
    """Why one line of a constraints file breaks the rule, or None when it follows it."""
    text = _INLINE_COMMENT.sub("", line).strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("-"):
        return "an option line (-e, -r, --index-url, ...): write name==version"
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        return f"not a requirement ({exc}): write name==version"
    if req.url:
        return f"a direct reference ({req.url}): write {req.name}==VERSION"
    if req.extras:
        return "extras in a constraint: pip refuses them; pin the distribution alone"
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==":
        return f"{req.name}{req.specifier or ' without a version'}: pin exactly one version with =="
    if "*" in specs[0].version:
        return f"a wildcard version ({specs[0]}): pin one version"
    if Version(specs[0].version).local:
        return f"a local version label ({specs[0].version}): a build only some indexes have"
    return None


def problems(lines: Iterable[str]) -> list[str]:
    """Every line that breaks the rule, as `line N: LINE: why`, and every distribution pinned twice."""
    found, seen = [], {}
    for number, line in enumerate(lines, 1):
        why = line_problem(line)
        if why:
            found.append(f"line {number}: {line.strip()}: {why}")
            continue
        text = _INLINE_COMMENT.sub("", line).strip()
        if text and not text.startswith("#"):
            req = Requirement(text)
            key = (canonicalize_name(req.name), str(req.marker))
            if key in seen:
                found.append(f"line {number}: {line.strip()}: {req.name} is pinned already on line {seen[key]}")
            seen[key] = number
    return found


def pins(lines: Iterable[str]) -> dict[str, str]:
    """{canonical name: version} of the pins of a file that follows the rule."""
    out = {}
    for line in lines:
        text = _INLINE_COMMENT.sub("", line).strip()
        if text and not text.startswith("#"):
            req = Requirement(text)
            out[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    return out


def _name(line: str) -> str | None:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def _distribution(name: str) -> metadata.Distribution:
    """The installed distribution `name`: where a build left `NAME.egg-info` in a folder on sys.path (the
    project's own source tree, the current folder under `python -m pytest`), the installed `.dist-info`
    pip wrote, not that leftover."""
    found = list(metadata.distributions(name=name))
    if not found:
        raise metadata.PackageNotFoundError(name)
    installed = [d for d in found if not str(getattr(d, "_path", "")).endswith(".egg-info")]
    return (installed or found)[0]


def required_distributions(project: str = PROJECT, extras: Iterable[str] = EXTRAS) -> dict[str, str]:
    """{canonical name: installed version} of every distribution `project[extras]` pulls into the running
    environment: its requirements (with those extras), followed through theirs, markers evaluated here.
    The project itself is not among them."""
    base = default_environment()
    found: dict[str, str] = {}
    todo = [(canonicalize_name(project), frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        try:
            dist = _distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: a requirement only another platform has, or a broken environment
        if name != canonicalize_name(project):
            found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            contexts = [{**base, "extra": extra} for extra in wanted] or [{**base, "extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in contexts):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return found


def frozen_lines(python: str = sys.executable) -> list[str]:
    """`pip list --format=freeze --exclude-editable` of an environment: name==version, never a reference."""
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json", "--exclude-editable"],
                            capture_output=True, text=True, check=True)
    return [f"{row['name']}=={row['version']}" for row in json.loads(listed.stdout)]


def header(path: Path) -> list[str]:
    """The comment lines at the top of an existing constraints file."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    top = []
    for line in lines:
        if not line.startswith("#"):
            break
        top.append(line)
    return top


def lock_text(path: Path) -> str:
    """The new constraints file: the old header, then the pins of every distribution stadapt[all,dev] pulls
    into this environment, sorted by name."""
    wanted = required_distributions()
    listed = [line for line in frozen_lines() if _name(line) in wanted]
    missing = sorted(set(wanted) - {_name(line) for line in listed})
    if missing:
        raise SystemExit(f"lock: pip list does not report {', '.join(missing)}; is the environment whole?")
    body = sorted(listed, key=lambda line: _name(line) or line)
    return "\n".join([*header(path), *body]) + "\n"


def write_lock(path: Path) -> None:
    text = lock_text(path)
    found = problems(text.splitlines())
    if found:
        raise SystemExit(f"lock: not written, {path.name} would break the rule:\n" + "\n".join(found))
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    print(f"lock: {path} pins {len(pins(text.splitlines()))} distributions")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    path = Path(args[0]) if args else CONSTRAINTS
    if check:
        found = problems(path.read_text(encoding="utf-8").splitlines())
        for line in found:
            print(f"{path}: {line}", file=sys.stderr)
        return 1 if found else 0
    write_lock(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
