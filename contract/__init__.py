"""The manifest contract shared by export/ and service/: a leaf package (standard library and pydantic only)."""

from contract.manifest import (
    DEFAULT_SURPRISE_THRESHOLD,
    HEAD_FEATURES,
    NAME_PATTERN,
    SCHEMA_VERSION,
    ComponentSpec,
    ContractModel,
    FutureSpec,
    HeadSpec,
    InputSpec,
    Manifest,
    OutputSpec,
    PlanningSpec,
    PredictorSpec,
    SurpriseSpec,
)

__all__ = [
    "DEFAULT_SURPRISE_THRESHOLD", "HEAD_FEATURES", "NAME_PATTERN", "SCHEMA_VERSION", "ComponentSpec", "ContractModel",
    "FutureSpec", "HeadSpec", "InputSpec", "Manifest", "OutputSpec", "PlanningSpec", "PredictorSpec", "SurpriseSpec",
]
