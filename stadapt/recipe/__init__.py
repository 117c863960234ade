"""Typed YAML recipes: one file says everything about a run; unknown keys and bad values are all
reported at once, before anything heavy (torch, data, weights) is touched."""

from stadapt.recipe.data_section import AugmentSection, DataSection
from stadapt.recipe.dump import describe_source, dump_recipe
from stadapt.recipe.load import load_recipe, recipe_from_dict
from stadapt.recipe.overrides import parse_override
from stadapt.recipe.schema import (
    AdapterSection,
    BackboneSection,
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
