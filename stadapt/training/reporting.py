"""What a run reports while it trains: metrics.jsonl, RUN/train.log, TensorBoard, Weights & Biases,
peak memory.

`train.loggers` picks the optional sinks; metrics.jsonl (the record every tool reads) and train.log
(the records of the `stadapt` loggers while the run trains, appended on resume, plus one text line per
logged event) are always written. Only the main process of a distributed run writes; on the others
`RunLog` does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stadapt.fileio import atomic_write_text
from stadapt.logs import RunFileLog
from stadapt.runs.metrics import MetricsLog

TENSORBOARD_DIR = "tensorboard"
TRAIN_LOG = "train.log"
WANDB_ID_FILE = "wandb.json"  # the Weights & Biases run id, so that --resume continues the same W&B run
_SCALARS = {"train": ("loss", "acc", "lr", "clips_per_s", "peak_memory_mb"),
            "val": ("top1", "top5", "mean_class_accuracy")}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated CUDA memory on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource  # POSIX only: imported here so that the module imports everywhere (the run lock refuses)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def scalars(event: dict[str, Any]) -> dict[str, float]:
    """The numbers of a train or val event that the loggers plot, keyed `split/name`."""
    split = str(event.get("split"))
    return {f"{split}/{key}": event[key] for key in _SCALARS.get(split, ())
            if isinstance(event.get(key), (int, float)) and not isinstance(event.get(key), bool)}


def append_train_log(run_path: Path, text: str) -> None:
    """Add lines a command prints after the run's log closed (its closing summary) to RUN/train.log."""
    try:
        with (run_path / TRAIN_LOG).open("a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")
    except OSError:
        pass


def _event_line(event: dict[str, Any]) -> str | None:
    """One text line for train.log per train/val event (the progress bar shows them only in passing)."""
    values = scalars(event)
    if not values:
        return None
    shown = "  ".join(f"{key.split('/', 1)[1]} {value:.4g}" for key, value in values.items())
    return f"[step {event['step']}] {event['split']}: {shown}"


WANDB_OFFLINE_MODES = frozenset({"offline", "dryrun", "disabled"})
WANDB_INIT_TIMEOUT = 30.0  # seconds wandb.init may take online (wandb's own default: 90) unless WANDB_INIT_TIMEOUT says
_PROBE_TIMEOUT = 5.0  # seconds to reach the W&B server before the run logs offline


def check_wandb() -> None:
    """Refuse `train.loggers: wandb` before any work when wandb is missing, or when it would log online
    without an API key (wandb.init fails later, after the model is built, with a traceback). Offline and
    disabled modes need no key."""
    from stadapt.errors import StadaptError
    from stadapt.extras import require

    require("wandb", what="train.loggers: wandb")
    settings = _wandb_settings()
    if settings.mode in WANDB_OFFLINE_MODES or _has_wandb_key(settings):
        return
    raise StadaptError(f"train.loggers: wandb logs online to {settings.base_url}, but no W&B API key is set up here",
                       "run `wandb login` or set WANDB_API_KEY; or log offline with WANDB_MODE=offline and upload "
                       "the run later with `wandb sync`")


def _wandb_settings() -> Any:
    """W&B's settings as wandb.init will see them (environment, `wandb offline`, settings files), read
    without starting wandb's service process."""
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings


def _has_wandb_key(settings: Any) -> bool:
    """Whether wandb finds credentials: WANDB_API_KEY, an identity token file, its settings, or the
    .netrc entry `wandb login` writes for the server's host."""
    import netrc
    from urllib.parse import urlsplit

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE") or settings.api_key:
        return True
    home = Path.home()
    path = os.environ.get("NETRC") or next((str(p) for p in (home / ".netrc", home / "_netrc") if p.is_file()), None)
    if path is None:
        return False
    try:
        found = netrc.netrc(path).authenticators(urlsplit(settings.base_url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(found and found[2])


def _unreachable(url: str) -> str | None:
    """Why the server at `url` (or the proxy in front of it) takes no connection within _PROBE_TIMEOUT,
    or None when it does: a quick look before wandb.init, which retries for minutes."""
    import socket
    import threading
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(host):
        through = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = through.hostname or "", through.port or 80
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc))

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT + 1)
    return outcome[0] if outcome else f"no answer in {_PROBE_TIMEOUT:.0f} s"


class _Wandb:
    """A Weights & Biases run for this run directory; a resumed run continues the same W&B run. A server
    that cannot be reached never holds the training up: the run logs offline, saying so."""

    def __init__(self, run_path: Path, *, name: str | None, config: dict[str, Any] | None, resumed: bool) -> None:
        check_wandb()
        import wandb

        id_file = run_path / WANDB_ID_FILE
        run_id = None
        if resumed and id_file.is_file():
            try:
                run_id = json.loads(id_file.read_text(encoding="utf-8")).get("id")
            except (OSError, ValueError, AttributeError):
                run_id = None
        run_id = run_id or uuid.uuid4().hex[:12]
        atomic_write_text(id_file, json.dumps({"id": run_id}) + "\n")
        where = os.environ.get("WANDB_DIR") or str(run_path)  # RUN/wandb/ unless WANDB_DIR says
        settings = _wandb_settings()
        timeout = settings.init_timeout if os.environ.get("WANDB_INIT_TIMEOUT") else WANDB_INIT_TIMEOUT
        args: dict[str, Any] = dict(project=os.environ.get("WANDB_PROJECT", "stadapt"), name=name, id=run_id,
                                    resume="allow", config=config, dir=where,
                                    settings=wandb.Settings(console="off", init_timeout=timeout))
        online = settings.mode not in WANDB_OFFLINE_MODES
        why = _unreachable(settings.base_url) if online else None
        if why is None:
            try:
                self.run = wandb.init(**args)
                return
            except wandb.Error as exc:
                if not online:
                    raise
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                wandb.teardown()  # its service still holds the run id the online try registered
        _going_offline(settings.base_url, why, where)
        self.run = wandb.init(mode="offline", **args)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def _going_offline(url: str, why: str, where: str) -> None:
    """The one line that says this run's W&B log stays on this machine, and how to upload it or skip the look."""
    warnings.warn(f"W&B cannot be reached at {url} ({why}), so this run logs to W&B offline in "
                  f"{Path(where) / 'wandb'} (upload it later with `wandb sync`); set WANDB_MODE=offline to log "
                  "offline without trying", stacklevel=3)


class RunLog:
    """metrics.jsonl, train.log and the recipe's `train.loggers` for train and val events (main process only)."""

    def __init__(self, run_path: Path, metrics_path: Path, *, enabled: bool, resume_step: int | None,
                 loggers: Sequence[str] = ("tensorboard",), tensorboard: bool | None = None,
                 name: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self._metrics = MetricsLog(metrics_path, resume_step=resume_step) if enabled else None
        self._board = self._wandb = self._console = None
        if not enabled:
            return
        if tensorboard is not None:  # the older keyword: on or off beside the other loggers
            loggers = [x for x in loggers if x != "tensorboard"] + (["tensorboard"] if tensorboard else [])
        self._console = RunFileLog(run_path / TRAIN_LOG)
        how = f"resumed at step {resume_step}" if resume_step is not None else "started"
        self._console.line(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} run {how}; loggers: metrics.jsonl, "
                           f"train.log{''.join(', ' + x for x in loggers)}")
        try:
            if "tensorboard" in loggers:
                self._board = _tensorboard_writer(run_path, resume_step)
            if "wandb" in loggers:
                self._wandb = _Wandb(run_path, name=name, config=config, resumed=resume_step is not None)
        except BaseException:
            self.close()
            raise

    def write(self, event: dict[str, Any]) -> None:
        if self._metrics is None:
            return
        self._metrics.write(event)
        values = scalars(event)
        if self._board is not None:
            for key, value in values.items():
                self._board.add_scalar(key, value, event["step"])
        if self._wandb is not None and values:
            self._wandb.log(values, event["step"])
        line = _event_line(event)
        if self._console is not None and line:
            self._console.line(line)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        if self._board is not None:
            self._board.close()
        if self._wandb is not None:
            self._wandb.close()
        if self._console is not None:
            self._console.close()


def _tensorboard_writer(run_path: Path, resume_step: int | None) -> Any:
    """TensorBoard's writer in RUN/tensorboard, or None (with one notice) when tensorboard is not installed:
    it is the default logger, so a core install still trains, logging to metrics.jsonl and train.log."""
    from stadapt.extras import available, install_hint

    if not available("torch.utils.tensorboard"):
        warnings.warn("TensorBoard is not installed, so this run logs to metrics.jsonl and train.log only; "
                      f"{install_hint('tensorboard')} (or set train.loggers=[] to silence this)", stacklevel=3)
        return None
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a resumed run is about to redo
    return SummaryWriter(str(run_path / TENSORBOARD_DIR), purge_step=resume_step or None)
