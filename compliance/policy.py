"""The personal-data policy: the data class of each field, what happens to each class, and
which value detectors run (a YAML file; ``compliance/default_policy.yaml`` documents the format
and is the default, ``M1_PII_POLICY_PATH`` names another).

Loading checks the file completely and says what is wrong and where: an unknown data class,
action, detector or event type, a field the event type does not have, a key of a field that is
not a map, a classified ``tenant``. :class:`Policy` is the checked file compiled for lookups.

>>> policy = load_policy()
>>> policy.action("phi"), policy.event_field("audit/1", "details", "diagnosis"), policy.otlp_span.of("patient.age")
('encrypt', 'phi', 'phi')
>>> load_policy_text("version: 1\\nclasses: {phi: shred}\\ndetectors: {email: phi}")
Traceback (most recent call last):
...
compliance.policy.PolicyError: <text>: classes.phi: Input should be 'redact', 'pseudonymise' or 'encrypt'
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import msgspec
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from compliance.detect import DETECTORS, Detector
from core.settings import Settings
from schemas.events import AuditEvent, MetricPoint, RegionHeartbeat, Span

DataClass = Literal["direct_identifier", "quasi_identifier", "phi", "secret"]
Action = Literal["redact", "pseudonymise", "encrypt"]
DATA_CLASSES: tuple[str, ...] = get_args(DataClass)

#: The shipped policy, used when ``M1_PII_POLICY_PATH`` is empty.
DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")
#: The event types a policy classifies, by schema tag.
EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "metric/1": MetricPoint, "span/1": Span, "audit/1": AuditEvent, "heartbeat/1": RegionHeartbeat}
#: Fields never classified: whose data it is, and when.
STRUCTURAL = frozenset({"tenant", "ts"})


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and every fault."""


def _fields(event_type: type[msgspec.Struct]) -> dict[str, str]:
    """``{field: "map" | "str" | "other"}`` of an event type."""
    kinds = {}
    for f in msgspec.inspect.type_info(event_type).fields:  # type: ignore[attr-defined]
        t = f.type.value_type if isinstance(f.type, msgspec.inspect.Metadata) else f.type
        kinds[f.name] = ("map" if isinstance(t, msgspec.inspect.DictType)
                         else "str" if isinstance(t, msgspec.inspect.StrType) else "other")
    return kinds


class OtlpSection(BaseModel):
    """OpenTelemetry attributes by key: resource, span (and span event/link), metric data point."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    resource: dict[str, DataClass] = {}
    span: dict[str, DataClass] = {}
    metric: dict[str, DataClass] = {}


class PolicyFile(BaseModel):
    """The policy file as written (see ``default_policy.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1]
    classes: dict[DataClass, Action]
    detectors: dict[str, DataClass] = {}
    subject_fields: list[str] = []
    events: dict[str, dict[str, DataClass]] = {}
    otlp: OtlpSection = OtlpSection()

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: dict[str, str]) -> dict[str, str]:
        if unknown := sorted(set(value) - set(DETECTORS)):
            raise ValueError(f"unknown detectors {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
        return value

    @field_validator("events")
    @classmethod
    def _known_fields(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        faults = []
        for event_type, rules in value.items():
            if event_type not in EVENT_TYPES:
                faults.append(f"unknown event type {event_type!r} (known: {', '.join(EVENT_TYPES)})")
                continue
            kinds = _fields(EVENT_TYPES[event_type])
            for path in rules:
                name, _, key = path.partition(".")
                if name in STRUCTURAL:
                    faults.append(f"{event_type} {path!r}: {name!r} is never classified")
                elif name not in kinds or kinds[name] == "other":
                    text_fields = sorted(n for n, k in kinds.items() if k != "other" and n not in STRUCTURAL)
                    faults.append(f"{event_type} {path!r}: no text field {name!r} (fields: {', '.join(text_fields)})")
                elif kinds[name] == "map" and not key:
                    faults.append(f"{event_type} {path!r}: {name!r} is a map; classify its keys as '{name}.<key>'")
                elif kinds[name] == "str" and key:
                    faults.append(f"{event_type} {path!r}: {name!r} is not a map, it has no key {key!r}")
        if faults:
            raise ValueError("; ".join(faults))
        return value

    @model_validator(mode="after")
    def _every_class_has_an_action(self) -> PolicyFile:
        if missing := [c for c in DATA_CLASSES if c not in self.classes]:
            raise ValueError(f"every data class needs an action, missing: {', '.join(missing)}")
        return self


class FieldRules:
    """Data classes by name: exact names, and ``*`` globs tried in file order.

    >>> rules = FieldRules({"user.email": "direct_identifier", "patient.*": "phi"})
    >>> rules.of("user.email"), rules.of("patient.age"), rules.of("host")
    ('direct_identifier', 'phi', None)
    """

    def __init__(self, rules: Mapping[str, str]) -> None:
        self.rules = dict(rules)
        self.exact = {name: c for name, c in rules.items() if "*" not in name}
        self._globs = [(re.compile(fnmatch.translate(name)), c) for name, c in rules.items() if "*" in name]
        self._cache: dict[str, str | None] = {}

    def of(self, name: str) -> str | None:
        """The class of ``name``, or None if unclassified."""
        found = self.exact.get(name)
        if found is not None or not self._globs:
            return found
        if name in self._cache:
            return self._cache[name]
        found = next((c for glob, c in self._globs if glob.match(name)), None)
        if len(self._cache) < 10_000:
            self._cache[name] = found
        return found

    def __bool__(self) -> bool:
        return bool(self.exact or self._globs)

    def names_of(self, data_class: str) -> list[str]:
        """The names and ``*`` globs classified ``data_class``, in file order."""
        return [name for name, c in self.rules.items() if c == data_class]


class Policy:
    """A checked policy compiled for lookups (build it with :func:`load_policy`)."""

    def __init__(self, source: PolicyFile, origin: str) -> None:
        self.source, self.origin = source, origin
        self.actions: dict[str, str] = dict(source.classes)
        self.detector = Detector(tuple(source.detectors))
        self.detector_class: dict[str, str] = dict(source.detectors)
        self.subject_fields: tuple[str, ...] = tuple(source.subject_fields)
        self.events: dict[str, dict[str, FieldRules | str]] = {}
        for event_type in EVENT_TYPES:
            rules = source.events.get(event_type, {})
            top: dict[str, FieldRules | str] = {p: c for p, c in rules.items() if "." not in p}
            maps: dict[str, dict[str, str]] = {}
            for path, c in rules.items():
                if "." in path:
                    name, key = path.split(".", 1)
                    maps.setdefault(name, {})[key] = c
            self.events[event_type] = {**top, **{name: FieldRules(keys) for name, keys in maps.items()}}
        self.otlp_resource = FieldRules(source.otlp.resource)
        self.otlp_span = FieldRules(source.otlp.span)
        self.otlp_metric = FieldRules(source.otlp.metric)

    def action(self, data_class: str) -> str:
        """What happens to values of ``data_class``."""
        return self.actions[data_class]

    def event_field(self, event_type: str, field: str, key: str | None = None) -> str | None:
        """The class of a top-level field, or of ``key`` of a map field, of an event type."""
        rule = self.events[event_type].get(field)
        if isinstance(rule, FieldRules):
            return rule.of(key) if key is not None else None
        return rule

    def map_rules(self, event_type: str, field: str) -> FieldRules:
        """The rules of the keys of map field ``field`` (empty if none)."""
        rule = self.events[event_type].get(field)
        return rule if isinstance(rule, FieldRules) else _NO_RULES

    def classified_names(self) -> dict[str, str]:
        """Every exact field or key name the policy classifies, with its class (for raw payloads,
        whose structure is unknown); the first class given to a name wins."""
        names: dict[str, str] = {}
        for rules in self.events.values():
            for name, rule in rules.items():
                for key, c in (rule.exact.items() if isinstance(rule, FieldRules) else [(name, rule)]):
                    names.setdefault(key, c)
        for rules in (self.otlp_resource, self.otlp_span, self.otlp_metric):
            for key, c in rules.exact.items():
                names.setdefault(key, c)
        return names


_NO_RULES = FieldRules({})


def load_policy_text(text: str, origin: str = "<text>") -> Policy:
    """The policy in YAML ``text`` (``origin`` names it in errors)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise PolicyError(f"{origin}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{origin}: a policy is a YAML mapping with version, classes, detectors, ...")
    try:
        return Policy(PolicyFile.model_validate(document), origin)
    except ValidationError as exc:
        faults = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg'].removeprefix('Value error, ')}"
                           for e in exc.errors())
        raise PolicyError(f"{origin}: {faults}") from None


def load_policy(path: Path | None = None) -> Policy:
    """The policy in ``path`` (default: the shipped one)."""
    path = path or DEFAULT_POLICY
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    return load_policy_text(text, str(path))


def policy_of(settings: Settings) -> Policy:
    """The policy the settings name (``M1_PII_POLICY_PATH``, else the shipped default)."""
    return load_policy(settings.pii_policy_path)
