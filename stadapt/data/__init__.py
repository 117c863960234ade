"""Video data: the prepared on-disk layout, decoding, frame sampling, transforms and the clip dataset.

Names are re-exported lazily so that `import stadapt.data` (and the CLI's `prepare-data`) does not
pull in torch or PyAV until something that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # prepared layout (standard library only)
    "VideoEntry": "stadapt.data.prepared",
    "PreparedData": "stadapt.data.prepared",
    "open_prepared": "stadapt.data.prepared",
    "read_classes": "stadapt.data.prepared",
    "read_list": "stadapt.data.prepared",
    "write_list": "stadapt.data.prepared",
    "write_prepared": "stadapt.data.prepared",
    "file_sha256": "stadapt.data.prepared",
    # published data sets -> prepared layout (standard library; --check decodes with PyAV)
    "Listing": "stadapt.data.formats.base",
    "prepare_listing": "stadapt.data.prepare",
    # decoding (PyAV)
    "VideoReader": "stadapt.data.pyav_reader",
    "read_frames": "stadapt.data.pyav_reader",
    "write_video": "stadapt.data.encode",
    # sampling (numpy)
    "FrameSampler": "stadapt.data.sampling",
    "StrideSampler": "stadapt.data.sampling",
    "SegmentSampler": "stadapt.data.sampling",
    "make_sampler": "stadapt.data.sampling",
    # transforms and dataset (torch)
    "TrainTransform": "stadapt.data.transforms",
    "TestTransform": "stadapt.data.transforms",
    "ClipRandAugment": "stadapt.data.augment",
    "VideoClipDataset": "stadapt.data.dataset",
    "collate_clips": "stadapt.data.dataset",
    # a video file -> a model's input views, from its InputSpec
    "video_views": "stadapt.data.views",
    "video_transform": "stadapt.data.views",
    "test_dataset": "stadapt.data.views",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stadapt.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
