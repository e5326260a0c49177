"""The declared fields of the evaluation context, and the check of a condition's field paths.

What it does: :data:`CONTEXT_FIELDS` declares, for every root of the context
that :func:`mape.plan.context.build_context` builds, which fields it has, so
that a typo such as ``drift.shar_drifted`` is an error when the policy is
loaded (with a suggestion), not a condition that silently never holds at
3 a.m. :func:`check_paths` finds the ``root.field`` paths of a CEL expression
and checks them against the declaration.

Roots whose keys are data rather than schema are declared open:
``baseline`` (whatever metrics training recorded), ``since_last`` (action
types), ``model.labels`` (the model's labels) and the kinds of ``symptoms``
(whose entries do have fixed fields: ``severity``, ``opened_at``,
``age_seconds``).

Who calls it: :class:`mape.plan.expressions.Condition` at compile time. A new
sensor that adds context fields declares them here, and a test checks that
every summary metric the Monitor writes is declared.

>>> check_paths("drift.share_drifted > 0.3 && model.labels.team == 'risk'")
>>> check_paths("drift.shar_drifted > 0.3")
Traceback (most recent call last):
...
mape.plan.fields.FieldPathError: unknown field 'shar_drifted' of drift (did you mean 'share_drifted'?); drift has: detected, max_effect_size, min_q_value, n_current, n_drifted, n_features, n_reference, reference_version, share_drifted
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RootFields:
    """What one context root holds.

    Attributes
    ----------
    fields : frozenset of str, optional
        The fields of the root; ``None`` when its keys are data (any key allowed).
    entry_fields : frozenset of str, optional
        For a map of records (``symptoms``): the fields of each entry.
    open_fields : frozenset of str
        Fields whose own keys are data (``model.labels``).
    """

    fields: frozenset[str] | None
    entry_fields: frozenset[str] | None = None
    open_fields: frozenset[str] = field(default_factory=frozenset)


#: What the promotion gate measured of both versions, read as ``promotion.<name>`` (the version in production)
#: and ``promotion.replaced_<name>`` (the version it replaced), on the same held-out rows.
SCORE_METRICS: tuple[str, ...] = ("accuracy", "mae", "rmse")
PROMOTION_METRICS: tuple[str, ...] = (*SCORE_METRICS, "demographic_parity_difference", "equalized_odds_difference",
                                      "equal_opportunity_difference")

CONTEXT_FIELDS: Mapping[str, RootFields] = {
    "drift": RootFields(frozenset({"share_drifted", "n_drifted", "n_features", "min_q_value", "detected",
                                   "max_effect_size", "n_reference", "n_current", "reference_version"})),
    "performance": RootFields(frozenset({"accuracy", "precision", "recall", "f1", "accuracy_drop", "n_labelled",
                                         "roc_auc", "log_loss", "estimated_accuracy", "estimated_accuracy_drop",
                                         "n_estimated", "mae", "rmse"})),
    "fairness": RootFields(frozenset({"demographic_parity_difference", "demographic_parity_ratio",
                                      "equalized_odds_difference", "equal_opportunity_difference",
                                      "accuracy_difference", "n_groups", "smallest_group",
                                      "demographic_parity_difference_upper", "demographic_parity_ratio_lower",
                                      "equalized_odds_difference_upper", "equal_opportunity_difference_upper",
                                      "accuracy_difference_upper"})),
    "gpu": RootFields(frozenset({"utilization", "memory_used_fraction", "memory_used_bytes", "memory_total_bytes",
                                 "power_watts", "temperature_c", "devices", "energy_joules"})),
    "carbon": RootFields(frozenset({"intensity", "forecast_min", "forecast_min_in_seconds", "forecast_mean"})),
    "serving": RootFields(frozenset({"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "requests_per_second",
                                     "error_rate", "replicas", "ready_replicas"})),
    "quality": RootFields(frozenset({"schema_changes", "missing_columns", "new_columns", "retyped_columns",
                                     "null_spikes", "out_of_range_spikes", "unseen_category_columns",
                                     "max_null_rate_increase", "max_out_of_range_share", "max_unseen_category_share",
                                     "issues", "n_current"})),
    "baseline": RootFields(None),
    "promotion": RootFields(frozenset({"replaced_version", "n", *(f"{prefix}{name}" for prefix in ("", "replaced_")
                                                                   for name in PROMOTION_METRICS)})),
    "symptoms": RootFields(None, entry_fields=frozenset({"severity", "opened_at", "age_seconds"})),
    "model": RootFields(frozenset({"name", "labels", "versions", "can_roll_back", "rollback_version",
                                   "production_version", "production_age_seconds"}), open_fields=frozenset({"labels"})),
    "since_last": RootFields(None),
}

_STRING = re.compile(r"""(?:[rR]?(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))""", re.DOTALL)
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")


def blank_strings(expression: str) -> str:
    """Replace string literals with spaces of the same length, so paths inside strings are not paths."""
    return _STRING.sub(lambda m: " " * len(m.group(0)), expression)


class FieldPathError(ValueError):
    """A condition names a field its context root does not declare; ``offset`` is where, in the expression."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


_SEGMENT = re.compile(r"[A-Za-z_]\w*")


def _selections(expression: str) -> Iterator[tuple[str, list[str], list[int]]]:
    """Like :func:`paths`, with the offset of each segment in the expression."""
    for match in _PATH.finditer(blank_strings(expression)):
        found = [(m.group(0), match.start(2) + m.start()) for m in _SEGMENT.finditer(match.group(2))]
        if match.group(3):  # the last segment is a method call: name.startsWith(...)
            found = found[:-1]
        if found:
            yield match.group(1), [name for name, _ in found], [offset for _, offset in found]


def paths(expression: str) -> Iterator[tuple[str, list[str]]]:
    """The ``root.a.b`` selections of an expression, as (root, [a, b]); method calls are cut off.

    >>> list(paths("has(drift.share_drifted) && model.name.startsWith('x.y')"))
    [('drift', ['share_drifted']), ('model', ['name'])]
    """
    for root, segments, _ in _selections(expression):
        yield root, segments


def _unknown(name: str, where: str, known: frozenset[str], offset: int) -> FieldPathError:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return FieldPathError(f"unknown field {name!r} of {where}{hint}; {where} has: {', '.join(sorted(known))}",
                          offset=offset)


def check_paths(expression: str, schema: Mapping[str, RootFields] = CONTEXT_FIELDS) -> None:
    """Raise :class:`FieldPathError` (a ``ValueError``) for the first path naming a field the context does not declare.

    >>> try:
    ...     check_paths("has(drift.shar_drifted)")
    ... except FieldPathError as exc:
    ...     exc.offset
    10
    """
    for root, segments, offsets in _selections(expression):
        spec = schema.get(root)
        if spec is None:  # not a context root: a comprehension variable, or caught by the root check
            continue
        if spec.fields is not None:
            if segments[0] not in spec.fields:
                raise _unknown(segments[0], root, spec.fields, offsets[0])
            continue
        if spec.entry_fields is not None and len(segments) >= 2 and segments[1] not in spec.entry_fields:
            raise _unknown(segments[1], f"{root}.{segments[0]}", spec.entry_fields, offsets[1])
