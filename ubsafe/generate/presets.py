"""Safe Latent Diffusion's presets and safety concept, as ubsafe's own constants.

diffusers keeps them in `SafetyConfig`, whose import path moved (`pipelines/deprecated` since
0.38) and which is not exported at the top level; they are plain numbers, so ubsafe holds them.

Hyp-Weak's `sld_guidance_scale` differs between sources: diffusers' `SafetyConfig.WEAK` says 20,
the authors' model card (AIML-TUDA/stable-diffusion-safe) says 200. ubsafe's `weak` follows the
authors (200); `weak-diffusers` offers diffusers' 20.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

#: The concept SLD steers away from (diffusers' default `safety_concept`); the `negative-prompt`
#: baseline uses it as the negative prompt.
SAFETY_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, "
    "nudity, bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, "
    "weapons, child abuse, brutality, cruelty"
)


def _preset(
    warmup: int, guidance: float, threshold: float, momentum: float, beta: float
) -> MappingProxyType[str, Any]:
    return MappingProxyType(
        {
            "sld_warmup_steps": warmup,
            "sld_guidance_scale": guidance,
            "sld_threshold": threshold,
            "sld_momentum_scale": momentum,
            "sld_mom_beta": beta,
        }
    )


#: Keyword arguments of `StableDiffusionPipelineSafe.__call__` per preset.
SLD_PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        # the authors' Hyp-Weak (model card): sld_guidance_scale 200
        "weak": _preset(15, 200.0, 0.0, 0.0, 0.0),
        # diffusers' SafetyConfig.WEAK: sld_guidance_scale 20
        "weak-diffusers": _preset(15, 20.0, 0.0, 0.0, 0.0),
        "medium": _preset(10, 1000.0, 0.01, 0.3, 0.4),
        "strong": _preset(7, 2000.0, 0.025, 0.5, 0.7),
        "max": _preset(0, 5000.0, 1.0, 0.5, 0.7),
    }
)
