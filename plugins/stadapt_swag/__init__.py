"""SWAG backbones (the ViTs of "Revisiting Weakly Supervised Pre-Training of Visual Perception Models",
facebookresearch/SWAG, built with classy-vision) for stadapt.

Registered under the `stadapt.backbones` entry-point group as `swag`; importing this module is cheap,
classy-vision is imported only when a model is built.
"""

from stadapt_swag.plugin import SwagPlugin

plugin = SwagPlugin()

__all__ = ["SwagPlugin", "plugin"]
