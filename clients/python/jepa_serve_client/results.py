"""What the client's methods return: one frozen dataclass per kind of answer, numpy arrays for vectors.

Each keeps the server's whole answer in `response` (not shown in repr): a field a newer server adds is there
before this client names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from jepa_serve_client.arrays import decode_array

R = TypeVar("R")


def _known(cls: type[R], answer: dict[str, Any], **decoded: Any) -> R:
    """cls from the answer's fields that cls names (the rest stays in `response`); `decoded` overrides."""
    names = {f.name for f in fields(cls)} - {"response"}  # type: ignore[arg-type]
    values = {k: v for k, v in answer.items() if k in names}
    return cls(**{**values, **decoded, "response": answer})


@dataclass(frozen=True)
class Embeddings:
    """POST /embed: `vectors` (N, dim) pooled, (N, tokens, dim) or (N, steps, dim), float32; the model that made
    them and its embedding `space_id` (an upsert of these vectors declares it, so a collection of another space
    refuses them with SpaceMismatch). `np.asarray(embeddings)` is `vectors`."""

    vectors: np.ndarray
    model: str
    space_id: str
    output: str = "pooled"
    cached: list[bool] | None = None  # per input: served from the server's embedding cache
    sampling: list[dict[str, Any] | None] | None = None  # per input: how a video was sampled
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    def __len__(self) -> int:
        return len(self.vectors)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.vectors if dtype is None else self.vectors.astype(dtype)


@dataclass(frozen=True)
class Collection:
    name: str
    dim: int
    metric: str
    index: str
    count: int
    space_id: str | None = None
    model: str | None = None
    memory_bytes: int = 0
    index_in_use: str | None = None
    tombstones: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Collection:
        return _known(cls, answer)


@dataclass(frozen=True)
class Point:
    id: str
    vector: np.ndarray  # (dim,) float32, as stored (normalised under the cosine metric)
    metadata: dict[str, Any]
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Point:
        return _known(cls, answer, vector=np.asarray(answer["vector"], dtype=np.float32))


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine and ip: higher is nearer; l2: the squared distance, lower is nearer
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Label:
    label: str | bool | int | float  # a head's labels are strings; kNN labels keep the JSON type they are stored with
    score: float  # head: the probability; kNN: the label's share of the (weighted) votes
    votes: int | None = None  # kNN: neighbours with this label


@dataclass(frozen=True)
class ClassifyResult:
    """POST /classify: `labels[i]` are input i's labels, best first; `top` the best label of each input."""

    labels: list[list[Label]]
    model: str | None = None
    head: str | None = None
    collection: str | None = None
    held_out_accuracy: float | None = None
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> ClassifyResult:
        labels = [[Label(**{k: v for k, v in label.items() if k in ("label", "score", "votes")}) for label in row]
                  for row in answer["labels"]]
        return _known(cls, answer, labels=labels)

    @property
    def top(self) -> list[str | None]:
        return [row[0].label if row else None for row in self.labels]


@dataclass(frozen=True)
class SurpriseResult:
    """POST /surprise: per scored step, its observation index (`steps`), z-score (`scores`) and raw distance;
    `surprising` the observation indices over `threshold`."""

    model: str
    space_id: str
    steps: list[int]
    scores: np.ndarray
    distances: np.ndarray
    threshold: float
    surprising: list[int]
    calibration: dict[str, Any] = field(default_factory=dict)
    sampling: Any = None  # how a video was sampled, when the server says
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> SurpriseResult:
        return _known(cls, answer, scores=decode_array(answer["scores"]), distances=decode_array(answer["distances"]))


@dataclass(frozen=True)
class Model:
    """One served model of GET /models: its contract (input, predictor, surprise calibration, heads)."""

    name: str
    family: str
    space_id: str
    dim: int
    input: dict[str, Any] = field(default_factory=dict)
    predictor: dict[str, Any] | None = None
    surprise: dict[str, Any] | None = None
    heads: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Model:
        return _known(cls, answer)


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    count: int  # points in the collection after the last request
    requests: int  # HTTP requests the upload took


@dataclass(frozen=True)
class Prediction:
    states: np.ndarray  # (steps, dim): the predicted state after each action
    initial_state: np.ndarray  # (dim,)
    tokens: np.ndarray | None  # (steps, tokens, dim) with output="tokens"
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Plan:
    actions: np.ndarray  # (horizon, action_dim)
    cost: float
    zero_action_cost: float
    predicted_states: np.ndarray  # (horizon, dim)
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class StreamScore:
    """One answer of /stream/surprise: `score` and `distance` are None while the model has nothing to compare
    (the first frames of a clip model)."""

    step: int
    score: float | None
    distance: float | None
    surprising: bool
