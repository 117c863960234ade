"""Typed YAML recipes: one file says everything about a run; unknown keys and bad values are all
reported at once, before anything heavy (torch, data, weights) is touched."""

from stadapt.recipe.load import describe_source, dump_recipe, load_recipe, parse_override, recipe_from_dict
from stadapt.recipe.schema import (
    AdapterSection,
    AugmentSection,
    BackboneSection,
    DataSection,
    ModelSection,
    OptimSection,
    OutputSection,
    Recipe,
    TrainSection,
)

__all__ = [
    "AdapterSection",
    "AugmentSection",
    "BackboneSection",
    "DataSection",
    "ModelSection",
    "OptimSection",
    "OutputSection",
    "Recipe",
    "TrainSection",
    "describe_source",
    "dump_recipe",
    "load_recipe",
    "parse_override",
    "recipe_from_dict",
]
