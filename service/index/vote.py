"""kNN classification: the labels of a query's nearest stored points, counted or weighted by similarity.

Weights by metric (the collection's score convention): cosine (1 + score) / 2, in [0, 1]; inner product
exp(score - best score), a softmax over the neighbours; l2 (a squared distance) 1 / (1 + score). A label's score
is its share of the total weight (majority: its share of the votes). Ties go to the label whose nearest point is
nearer. Neighbours without the label field (or with null there) do not vote.

Labels keep their JSON type, as filters do: `true` and `"true"` are two labels, `1` and `"1"` too; numbers
compare as numbers (`1` and `1.0` are one label, as a filter on 1 finds both). A label that is an object or a
list has no such identity: the request is refused, naming the point, as is a label field that none of the
neighbours has (most likely a misspelt field, which used to answer 200 with no labels at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

from service.errors import ErrorCode, UnprocessableInput
from service.index.collection import Hit

Vote = Literal["majority", "weighted"]
Label = str | bool | int | float
SHOWN_FIELDS = 20  # fields the neighbours do have, named when the asked one is on none of them


@dataclass(frozen=True)
class LabelVote:
    label: Label  # as stored in the first (nearest) neighbour that carries it
    score: float  # share of the weight (or of the votes), in [0, 1]
    votes: int  # neighbours with this label


def neighbour_weights(scores: Sequence[float], metric: str, vote: Vote) -> list[float]:
    if vote == "majority":
        return [1.0] * len(scores)
    if metric == "cosine":
        return [(1.0 + s) / 2.0 for s in scores]
    if metric == "ip":
        best = max(scores, default=0.0)
        return [math.exp(s - best) for s in scores]
    return [1.0 / (1.0 + max(s, 0.0)) for s in scores]


def label_key(value: Any) -> tuple[str, Any] | None:
    """What makes two labels one: the JSON type and the value (numbers as numbers); None for no label."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, Real):
        return "number", float(value)
    if isinstance(value, str):
        return "string", value
    raise TypeError(type(value).__name__)


def check_label_field(results: Sequence[Sequence[Hit]], field: str) -> None:
    """422 when the neighbours' labels cannot be voted on: an object or list label (which point), or a field that
    no neighbour carries (with the fields they do carry)."""
    labelled = False
    for hit in (h for hits in results for h in hits):
        value = hit.metadata.get(field)
        try:
            labelled |= label_key(value) is not None
        except TypeError:
            raise UnprocessableInput(
                f"point {hit.id!r} has a {type(value).__name__} in label field {field!r}: labels are strings, "
                "numbers or booleans", {"label_field": field, "id": hit.id, "type": type(value).__name__},
                code=ErrorCode.INVALID_LABEL) from None
    neighbours = [h for hits in results for h in hits]
    if neighbours and not labelled:
        fields = sorted({f for h in neighbours for f in h.metadata})
        raise UnprocessableInput(
            f"none of the {len(neighbours)} nearest points has label field {field!r}",
            {"label_field": field, "fields": fields[:SHOWN_FIELDS]}, code=ErrorCode.INVALID_LABEL)


def vote_labels(hits: Sequence[Hit], field: str, metric: str, vote: Vote) -> list[LabelVote]:
    """Hits, nearest first (checked by check_label_field) -> every label among them, best first."""
    labelled = [(h.metadata[field], h.score) for h in hits if label_key(h.metadata.get(field)) is not None]
    weights = neighbour_weights([score for _, score in labelled], metric, vote)
    if not all(math.isfinite(w) for w in weights):  # scores that overflowed float32 (huge vectors): count instead
        weights = [1.0] * len(labelled)
    total = sum(weights)
    weight: dict[tuple[str, Any], float] = {}
    count: dict[tuple[str, Any], int] = {}
    shown: dict[tuple[str, Any], Label] = {}
    for (label, _), w in zip(labelled, weights, strict=True):
        key = label_key(label)
        assert key is not None
        weight[key] = weight.get(key, 0.0) + w
        count[key] = count.get(key, 0) + 1
        shown.setdefault(key, label)  # in rank order: ties go to the label seen first
    ranked = sorted(weight, key=lambda key: -weight[key])  # stable: the nearer label first among equals
    return [LabelVote(shown[key], weight[key] / total if total > 0 else 0.0, count[key]) for key in ranked]
