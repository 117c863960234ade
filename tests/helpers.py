"""Builders for the weights and checkpoints tests write themselves (no downloads)."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

TINY = dict(image_size=32, patch_size=8, width=128, layers=4, heads=4, output_dim=64)


def tiny_visual(seed: int = 0, quick_gelu: bool = True) -> nn.Module:
    """An open_clip vision tower of the clip:tiny shape, with CLIP's `proj`, randomly initialised."""
    from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer

    torch.manual_seed(seed)
    visual = VisionTransformer(mlp_ratio=4.0, act_layer=QuickGELU if quick_gelu else nn.GELU,
                               norm_layer=LayerNorm, **TINY)
    with torch.no_grad():  # make the norms non-trivial so a skipped norm would show
        for name, p in visual.named_parameters():
            if name.endswith(("ln_pre.weight", "ln_post.weight", "ln_1.weight", "ln_2.weight")):
                p.add_(torch.randn_like(p) * 0.2)
            elif name.endswith(("ln_pre.bias", "ln_post.bias", "ln_1.bias", "ln_2.bias")):
                p.copy_(torch.randn_like(p) * 0.1)
    return visual.eval()


class _OpenAIStyleCLIP(nn.Module):
    """Mimics OpenAI's CLIP archive: a `visual` tower beside text-side tensors."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.token_embedding = nn.Embedding(10, 32)
        self.positional_embedding = nn.Parameter(torch.zeros(7, 32))
        self.text_projection = nn.Parameter(torch.zeros(32, 64))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def write_openai_archive(visual: nn.Module, path: Path) -> Path:
    """A TorchScript archive in the shape of OpenAI's ViT-B-16.pt (fp16 weights, as OpenAI ships them)."""
    model = _OpenAIStyleCLIP(copy.deepcopy(visual)).eval()
    traced = torch.jit.trace(model, torch.randn(1, 3, 32, 32), check_trace=False)
    traced = traced.half()
    torch.jit.save(traced, str(path))
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            process: bool = False) -> subprocess.CompletedProcess:
    """`stadapt ARGS` as a user runs it: the console script's own `main()` in this process, with its
    argv, stdout, stderr and exit code, as a fresh process would give them (about 4 s of imports saved
    per call). With `env` or `process=True` it runs the installed console script in a new process:
    what environment variables set at import time (PYTHONPATH plugins, HF_* settings), signals, locks
    held by another process or the process's own exit need."""
    if env or process:
        return run_console_script(*args, env=env, cwd=cwd)
    return _run_in_process(list(args), cwd)


def run_console_script(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `stadapt` console script in a new process."""
    exe = Path(sys.executable).with_name("stadapt")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


class _Captured(io.StringIO):
    """A text stream like a pipe's: not a terminal, so progress bars and colours behave as in a subprocess."""

    def isatty(self) -> bool:
        return False


# the warning filters of a fresh interpreter (no -W, no PYTHONWARNINGS): pytest's own filters must not
# change what a command prints
_FRESH_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, None),
                  ("ignore", PendingDeprecationWarning, None), ("ignore", ImportWarning, None),
                  ("ignore", ResourceWarning, None))


def _run_in_process(args: list[str], cwd: Path | None) -> subprocess.CompletedProcess:
    """main() with sys.argv, __main__, the standard streams, the working directory, the umask, torch's thread
    count, the warning filters, the `stadapt` logger and the plugin cache as a new process has them, all
    restored after."""
    import logging
    import traceback
    import types
    import warnings

    from stadapt.backbones import clear_cache
    from stadapt.cli import main

    out, err = _Captured(), _Captured()
    logger = logging.getLogger("stadapt")
    logging_state = (list(logger.handlers), logger.level)
    saved = (sys.argv, sys.stdout, sys.stderr, os.getcwd(), torch.get_num_threads(), sys.modules["__main__"])
    # a console script's __main__ belongs to no package: click names the program after argv[0] (`stadapt`),
    # as in a real process, not `python -m pytest` when the tests run under `python -m pytest`
    sys.modules["__main__"] = types.ModuleType("__main__")
    umask = os.umask(0o022)
    os.umask(umask)
    code: int | str | None = 0
    clear_cache()
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in reversed(_FRESH_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        sys.argv, sys.stdout, sys.stderr = ["stadapt", *args], out, err
        try:
            if cwd is not None:
                os.chdir(cwd)
            main()
        except SystemExit as exc:
            code = exc.code
        except KeyboardInterrupt:
            traceback.print_exc(file=err)
            code = 130
        except BaseException:  # what the interpreter would print before exiting 1
            traceback.print_exc(file=err)
            code = 1
        finally:
            sys.argv, sys.stdout, sys.stderr, sys.modules["__main__"] = saved[0], saved[1], saved[2], saved[5]
            os.chdir(saved[3])
            torch.set_num_threads(saved[4])
            os.umask(umask)
            clear_cache()
            logger.handlers[:] = logging_state[0]
            logger.setLevel(logging_state[1])
    if isinstance(code, str):  # SystemExit("message"): printed, exit status 1
        err.write(code + "\n")
        code = 1
    return subprocess.CompletedProcess(["stadapt", *args], int(code or 0), out.getvalue(), err.getvalue())


def perturb_layer_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial LayerNorms (weights around 1, biases around 0), so that a skipped or misplaced norm
    shows in a model's outputs; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(torch.randn(module.weight.shape, generator=generator) * 0.3)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def train_synthetic_run(base: Path, recipe: str) -> Path:
    """Train `recipe` (a template whose `{root}` is the data set) through the console script on a tiny
    synthetic data set of 2 classes (moving right / left; 2 training and 2 validation videos each, 10
    frames of 32 px) written under `base`; returns the run directory `base/run`."""
    import json

    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    root = base / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=2, frames=10,
                                        size=32, clutter=4))
    path = base / "tiny.yaml"
    path.write_text(recipe.format(root=json.dumps(str(root))))
    done = run_cli("train", str(path), f"output.dir={base / 'run'}", "-q")
    assert done.returncode == 0, done.stderr
    return base / "run"


def write_trainer_state(folder: Path, files: dict[str, bytes]) -> None:
    """`state_files(...)` written as a checkpoint writes them: the files, and a stadapt.json beside them
    recording their checksums (what `restore_state` checks them against)."""
    import json

    from stadapt.checkpoints.files import DIGESTS, META_FILE, checksum
    from stadapt.checkpoints.format import FORMAT

    for name, data in files.items():
        (folder / name).write_bytes(data)
    digests = {name: checksum(data) for name, data in files.items()}
    (folder / META_FILE).write_text(json.dumps({"format": FORMAT, DIGESTS: digests}))


HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(root: Path, repo: str, source: Path) -> Path:
    """The files of folder `source` in huggingface_hub's documented cache layout under `root`:
    models--ORG--NAME/blobs/<sha256>, refs/main = `HUB_REVISION`, snapshots/<revision>/FILE a relative link to
    its blob (dot-files, such as a --to-dir marker, left out); returns `root`."""
    import hashlib

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(HUB_REVISION)
    (folder / "blobs").mkdir()
    snapshot = folder / "snapshots" / HUB_REVISION
    snapshot.mkdir(parents=True)
    for path in source.iterdir():
        if path.name.startswith("."):
            continue
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (folder / "blobs" / blob).write_bytes(data)
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    return root


def write_distribution(site: Path, module: str, source: str, entry_points: str) -> Path:
    """A pip-installed distribution as a third party ships one, without pip: `site/<module>.py` holding
    `source` and its dist-info with `entry_points` (the text of entry_points.txt, e.g. "[stadapt.tuners]\n
    name = module:object\n"). Put `site` on sys.path (monkeypatch.syspath_prepend) or PYTHONPATH to install
    it, then clear the registry's cache."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


def write_tiny_open_clip(base: Path, name: str, config: dict, *, logit_scale: float = 20.0) -> Path:
    """A tiny open_clip image-text model of `config`, registered with open_clip under `name` (a config file in
    `base`), with random weights (seed 0) and the logit scale `logit_scale`, its state dict written to
    `base/<name>.pt`: the weights file the clip plugin builds both towers from."""
    import json
    import math

    import open_clip

    (base / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(base)
    torch.manual_seed(0)
    model = open_clip.create_model(name, load_weights=False)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    weights = base / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    return weights


def count_encode_text(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch TextTower.encode_text (through pytest's `monkeypatch`) to record how many prompts each call
    embedded: the text tower's work, which a cache or a checkpoint's kept embeddings should spare."""
    from stadapt.backbones.text import TextTower

    found: list[int] = []
    original = TextTower.encode_text

    def counting(self: TextTower, tokens: torch.Tensor) -> torch.Tensor:
        found.append(len(tokens))
        return original(self, tokens)

    monkeypatch.setattr(TextTower, "encode_text", counting)
    return found
