"""What the adapters change: [CLS] attention maps of the last block, before and after adaptation."""

from stadapt.tools.visualize.attention import attention_maps, figure_size, visualize

__all__ = ["attention_maps", "figure_size", "visualize"]
