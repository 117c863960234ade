"""`regvit`: an example third-party backbone plugin for stadapt.

stadapt finds it through the `stadapt.backbones` entry point in this distribution's pyproject.toml;
nothing in stadapt names it. Importing this module must stay cheap (no model is built here), because
`stadapt backbones` imports every plugin to list its variants.
"""

from stadapt_regvit.plugin import RegViTPlugin

plugin = RegViTPlugin()

__all__ = ["RegViTPlugin", "plugin"]
