"""Readers that turn each video data set's own published layout into a `Listing`.

`READERS` maps the format name used on the command line (`stadapt prepare-data k400 ...`) to its
reader. Every reader takes the data set root and keyword-only options naming explicit paths; only
the standard library is used, so listing a data set never imports torch or PyAV.
"""

from __future__ import annotations

from collections.abc import Callable

from stadapt.data.formats.base import Listing
from stadapt.data.formats.hmdb51 import read_hmdb51
from stadapt.data.formats.k400 import read_k400
from stadapt.data.formats.listfile import read_list
from stadapt.data.formats.ssv2 import read_ssv2
from stadapt.data.formats.ucf101 import read_ucf101
from stadapt.data.formats.videos import VIDEO_EXTS, index_videos

READERS: dict[str, Callable[..., Listing]] = {
    "k400": read_k400,
    "ssv2": read_ssv2,
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
    "list": read_list,
}

__all__ = ["READERS", "Listing", "VIDEO_EXTS", "index_videos", "read_hmdb51", "read_k400", "read_list",
           "read_ssv2", "read_ucf101"]
