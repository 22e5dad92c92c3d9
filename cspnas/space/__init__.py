"""Architecture descriptions (ArchConfig) and search spaces over them."""
from cspnas.space.arch import (
    ACTIVATIONS,
    BLOCK_TYPES,
    SCHEMA_VERSION,
    STAGE_TYPES,
    ArchConfig,
    StageConfig,
    StemConfig,
    arch_from_dict,
    split_channels,
    stage_channels,
    validate,
)

__all__ = [
    "ACTIVATIONS", "BLOCK_TYPES", "SCHEMA_VERSION", "STAGE_TYPES", "ArchConfig", "StageConfig",
    "StemConfig", "arch_from_dict", "split_channels", "stage_channels", "validate",
]
