"""Architecture families and the lookup from a Hugging Face config to one."""

from __future__ import annotations

from phiquant.errors import SourceError
from phiquant.families.base import Family
from phiquant.families.llama import LLAMA
from phiquant.families.phi import PHI
from phiquant.families.phi3 import PHI3

FAMILIES: tuple[Family, ...] = (PHI3, PHI, LLAMA)

# Relatives people try to convert that share a name but not a layout.
KNOWN_UNSUPPORTED = {
    "Phi3SmallForCausalLM": "Phi-3-small (block-sparse attention)",
    "PhiMoEForCausalLM": "Phi-3.5-MoE (mixture of experts)",
    "Phi3VForCausalLM": "Phi-3-vision",
    "Phi4MMForCausalLM": "Phi-4-multimodal",
    "Phi4FlashForCausalLM": "Phi-4-mini-flash (hybrid state-space layers)",
}


def supported_summary() -> str:
    """One line naming the architectures phiquant converts."""
    names = [
        arch for family in FAMILIES if family.supported for arch in family.architectures
    ]
    return ", ".join(names)


def family_for_config(config: dict) -> Family:
    """Find the family of a Hugging Face ``config.json`` or explain why none fits."""
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if not isinstance(architectures, list):
        raise SourceError(
            f"config.json's architectures is {architectures!r}, not a list",
            'Write it as a list, e.g. "architectures": ["Phi3ForCausalLM"]',
        )

    for arch in architectures:
        if arch in KNOWN_UNSUPPORTED:
            raise SourceError(
                f"{KNOWN_UNSUPPORTED[arch]} ({arch}) is not supported",
                f"Supported architectures: {supported_summary()}",
            )

    for family in FAMILIES:
        if any(arch in family.architectures for arch in architectures) or (
            not architectures and model_type in family.model_types
        ):
            if not family.supported:
                raise SourceError(family.unsupported_reason or family.name, "")
            return family

    shown = ", ".join(architectures) or f"model_type {model_type!r}"
    raise SourceError(
        f"unknown architecture {shown}",
        f"Supported architectures: {supported_summary()}",
    )
