"""A synthetic data set is a pure function of its spec: written twice, byte for byte the same files.

It was not: x264's macroblock-tree rate control read memory it never wrote (valgrind, on the synthetic
48x48 frames), so a clip's bytes followed whatever the heap held, and the quickstart's top-1 moved from
run to run. The generations below leave different junk on the heap before every clip (through the
progress callback), which made the old encoder options differ in about 6 of 10 runs of this test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

# three motions (the scale pair's clips were the ones that moved), two training clips and one validation
# clip per class: 18 clips of 16 frames at 48 px, about a second
SPEC = SyntheticSpec(train_per_class=2, val_per_class=1, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _junk_on_the_heap(seed: int):
    """A progress callback that allocates and frees a few MB of random bytes after every clip."""
    rng = np.random.default_rng(seed)

    def progress(_: int) -> None:
        junk = [rng.bytes(size) for size in (1_000, 5_000, 20_000, 60_000, 100_000) for _ in range(10)]
        del junk

    return progress


def test_two_generations_write_identical_files(tmp_path: Path) -> None:
    generations = []
    for k in range(3):
        out = tmp_path / f"gen{k}"
        write_synthetic(out, SPEC, progress=_junk_on_the_heap(k))
        generations.append(_files(out))
    first = generations[0]
    assert len([name for name in first if name.endswith(".mp4")]) == 18
    for other in generations[1:]:
        assert other.keys() == first.keys()
        differing = sorted(name for name in first if other[name] != first[name])
        assert not differing, f"written differently the second time: {differing}"
