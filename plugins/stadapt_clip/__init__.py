"""CLIP backbones (OpenAI / OpenCLIP ViTs, built with open_clip) for stadapt.

Registered under the `stadapt.backbones` entry-point group as `clip`; importing this module is cheap,
open_clip is imported only when a model is built.
"""

from stadapt_clip.plugin import ClipPlugin

plugin = ClipPlugin()

__all__ = ["ClipPlugin", "plugin"]
