"""The library logs through the `stadapt` logger hierarchy and never prints (issue 24.5): a program that
imports stadapt captures or silences it as any library's; the command shows the records on stderr, `-q`
keeps warnings only, `-v` adds debug records, and a training run copies them into RUN/train.log."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import stadapt
from stadapt.checkpoints.format import model_meta, write_checkpoint
from stadapt.cli import logs as cli_logs
from stadapt.data.input_spec import input_spec_from_data
from stadapt.logs import RunFileLog
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.runs.lookup import resolve_target

PACKAGE = Path(stadapt.__file__).parent


def printing_calls(source: str) -> list[int]:
    """Lines that print or write to the standard streams, outside the functions a `__main__` block runs (a
    `python -m` program's own output)."""
    tree = ast.parse(source)
    mains = [block for block in tree.body if isinstance(block, ast.If) and "__main__" in ast.unparse(block.test)]
    entry = {node.func.id for block in mains for node in ast.walk(block)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    skipped = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name in entry for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in skipped:
            continue
        name = ast.unparse(node.func)
        if name in {"print", "tqdm.write", "sys.stdout.write", "sys.stderr.write", "typer.echo"} or \
                name.endswith("bar.write"):
            found.append(node.lineno)
    return found


def test_the_check_sees_prints_but_not_a_programs_own_output() -> None:
    source = "import sys\ndef f():\n    print(1)\n    sys.stderr.write('x')\ndef main():\n    print(2)\n" \
             "if __name__ == '__main__':\n    sys.exit(main())\n"
    assert printing_calls(source) == [3, 4]


def test_nothing_in_the_library_prints() -> None:
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
                 if "cli" not in path.relative_to(PACKAGE).parts[:1]
                 for line in printing_calls(path.read_text(encoding="utf-8"))]
    assert not offenders, "library code prints (log through logging.getLogger(__name__)): " + ", ".join(offenders)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose best checkpoint (step 1) is not its last (step 2): resolving it says which one it uses."""
    root = tmp_path_factory.mktemp("logging") / "run"
    for name, step in (("best", 1), ("last", 2)):
        built = build_model(ModelConfig("clip:tiny", 2, 4, AdapterConfig(bottleneck=8)), weights="synthetic")
        meta = model_meta(built, ["a", "b"], input_spec=input_spec_from_data({"frames": 4}, built.variant), step=step)
        write_checkpoint(root / "checkpoints" / name, built.model.trainable_state_dict(), meta)
    return root


def test_a_program_captures_or_silences_what_the_library_says(run: Path, capsys: pytest.CaptureFixture,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stadapt"):
        checkpoint, _ = resolve_target(run)
    assert checkpoint == run / "checkpoints" / "best"
    (record,) = [r for r in caplog.records if r.name == "stadapt.runs.lookup"]
    assert record.levelno == logging.INFO and record.getMessage().startswith(f"{run}: using ")
    caplog.clear()
    logging.getLogger("stadapt").setLevel(logging.WARNING)  # silenced, as a program would
    try:
        resolve_target(run)
    finally:
        logging.getLogger("stadapt").setLevel(logging.NOTSET)
    assert not caplog.records
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""  # nothing printed: no handler of its own, no print


def test_the_command_shows_records_on_stderr_and_q_v_choose_how_many(capsys: pytest.CaptureFixture) -> None:
    logger = logging.getLogger("stadapt.test")
    saved = list(logging.getLogger("stadapt").handlers), logging.getLogger("stadapt").level
    try:
        for level, shown in ((None, ["information", "warning: careful"]), (logging.WARNING, ["warning: careful"]),
                             (logging.DEBUG, ["details", "information", "warning: careful"])):
            cli_logs.install()
            if level is not None:
                cli_logs.set_level(level)
            logger.debug("details")
            logger.info("information")
            logger.warning("careful")
            captured = capsys.readouterr()
            assert captured.out == "" and captured.err.splitlines() == shown
    finally:
        logging.getLogger("stadapt").handlers[:] = saved[0]
        logging.getLogger("stadapt").setLevel(saved[1])


def test_a_runs_log_file_keeps_information_whatever_the_console_shows(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    root = logging.getLogger("stadapt")
    root.setLevel(logging.WARNING)  # a program that shows warnings only
    handler = RunFileLog(path)
    try:
        handler.line("--- header")
        logging.getLogger("stadapt.training.cadence").info("step 2: val top-1 50.0%")
        logging.getLogger("stadapt.training.cadence").warning("cannot decode x (skipped)")
    finally:
        handler.close()
    assert root.level == logging.WARNING and handler not in root.handlers
    root.setLevel(logging.NOTSET)
    assert path.read_text().splitlines() == ["--- header", "step 2: val top-1 50.0%",
                                             "warning: cannot decode x (skipped)"]
    logging.getLogger("stadapt.training.cadence").info("after the run")
    assert "after the run" not in path.read_text()
