"""timm backbones (Swin Transformer, ImageNet-21k ViT) for stadapt.

Registered under the `stadapt.backbones` entry-point group as `timm`; importing this module is cheap,
timm (and torch) are imported only when a model is built or a weights file is converted.
"""

from stadapt_timm.plugin import TimmPlugin

plugin = TimmPlugin()

__all__ = ["TimmPlugin", "plugin"]
