"""Text-to-image generators (Stable Diffusion, Safe Latent Diffusion, SafeGen, baselines).

The registry (`registry/*.toml`) describes each generator; `pipeline.load_generator` loads one from
the weights directory; `seeding` gives every image its starting latent; `tiny` builds the small
random pipelines the tests and the demo use.
"""

from ubsafe.generate.registry import (
    GeneratorEntry,
    UnknownGeneratorError,
    get_generator,
    list_generators,
    weight_files,
)

__all__ = [
    "GeneratorEntry",
    "UnknownGeneratorError",
    "get_generator",
    "list_generators",
    "weight_files",
]
