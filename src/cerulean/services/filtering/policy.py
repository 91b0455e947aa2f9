"""Content-filter policies (``raiPolicies``) as values: what to evaluate, on which side, at
which threshold, and which blocklists apply.

A stored policy keeps its ARM ``properties`` as given; :func:`effective_policy` reads them
into a :class:`Policy`, starting from the built-in base it names. Built-in policies:
``Microsoft.Default`` and ``Microsoft.DefaultV2`` (the four harm categories at Medium on both
sides, jailbreak detection on prompts), which a deployment naming no policy gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "BUILTIN_POLICIES",
    "CATEGORIES",
    "DEFAULT_POLICY",
    "DETECTORS",
    "OFF",
    "SEVERITY_RANK",
    "BlocklistUse",
    "CategoryRule",
    "Policy",
    "builtin_properties",
    "canonical_filter",
    "effective_policy",
]

Side = Literal["Prompt", "Completion"]
Severity = Literal["safe", "low", "medium", "high"]
# The four harm categories, as the annotations name them.
CATEGORIES: tuple[str, ...] = ("hate", "sexual", "violence", "self_harm")
# Detectors report ``detected`` rather than a severity.
DETECTORS: tuple[str, ...] = ("jailbreak", "profanity", "protected_material_text")
SEVERITY_RANK = {"safe": 0, "low": 1, "medium": 2, "high": 3}
DEFAULT_POLICY = "Microsoft.DefaultV2"
OFF = "Cerulean.Off"  # a built-in policy that evaluates nothing (benchmarks, development)

# ARM filter names (``contentFilters[].name``, any case) → the annotations' keys.
_FILTER_NAMES = {
    "hate": "hate",
    "sexual": "sexual",
    "violence": "violence",
    "selfharm": "self_harm",
    "self_harm": "self_harm",
    "self-harm": "self_harm",
    "jailbreak": "jailbreak",
    "profanity": "profanity",
    "protected material text": "protected_material_text",
    "protected_material_text": "protected_material_text",
    "protected material code": "protected_material_code",
    "protected_material_code": "protected_material_code",
    "indirect attack": "indirect_attack",
    "indirect_attack": "indirect_attack",
}
_ARM_NAMES = {
    "hate": "Hate",
    "sexual": "Sexual",
    "violence": "Violence",
    "self_harm": "Selfharm",
    "jailbreak": "Jailbreak",
    "protected_material_text": "Protected Material Text",
    "protected_material_code": "Protected Material Code",
}


def canonical_filter(name: str) -> str | None:
    """The annotation key for an ARM filter name, or None for one Cerulean does not know."""
    return _FILTER_NAMES.get(name.strip().lower())


@dataclass(frozen=True)
class CategoryRule:
    """One filter on one side: on, and filtering at ``threshold`` and above when ``blocking``."""

    enabled: bool = True
    threshold: Severity = "medium"
    blocking: bool = True

    def filters(self, severity: Severity) -> bool:
        """Whether content of ``severity`` is filtered (``safe`` never is)."""
        if not (self.enabled and self.blocking) or severity == "safe":
            return False
        return SEVERITY_RANK[severity] >= SEVERITY_RANK[self.threshold]


@dataclass(frozen=True)
class BlocklistUse:
    """A custom blocklist applied on one side."""

    name: str
    blocking: bool = True


@dataclass(frozen=True)
class Policy:
    """What a deployment's filter evaluates: rules per side, keyed by annotation name."""

    name: str
    mode: str = "Default"
    prompt: dict[str, CategoryRule] = field(default_factory=dict)
    completion: dict[str, CategoryRule] = field(default_factory=dict)
    prompt_blocklists: tuple[BlocklistUse, ...] = ()
    completion_blocklists: tuple[BlocklistUse, ...] = ()

    @property
    def asynchronous(self) -> bool:
        """Whether streams use the asynchronous filter (content first, annotations after)."""
        return self.mode == "Asynchronous_filter"

    def rules(self, side: Side) -> dict[str, CategoryRule]:
        return self.prompt if side == "Prompt" else self.completion

    def blocklists(self, side: Side) -> tuple[BlocklistUse, ...]:
        return self.prompt_blocklists if side == "Prompt" else self.completion_blocklists

    @property
    def evaluates_anything(self) -> bool:
        sides = (*self.prompt.values(), *self.completion.values())
        return any(r.enabled for r in sides) or bool(
            self.prompt_blocklists or self.completion_blocklists
        )


def _default(name: str) -> Policy:
    harm = {c: CategoryRule() for c in CATEGORIES}
    return Policy(
        name=name,
        prompt={**harm, "jailbreak": CategoryRule()},
        completion=dict(harm),
    )


BUILTIN_POLICIES: dict[str, Policy] = {
    "Microsoft.Default": _default("Microsoft.Default"),
    "Microsoft.DefaultV2": _default("Microsoft.DefaultV2"),
    OFF: Policy(name=OFF),
}


def builtin(name: str) -> Policy | None:
    """The built-in policy ``name`` (case-insensitive), or None."""
    for key, policy in BUILTIN_POLICIES.items():
        if key.lower() == name.lower():
            return policy
    return None


def _threshold(value: str | None) -> Severity:
    return "low" if value == "Low" else "high" if value == "High" else "medium"


def effective_policy(name: str, properties: dict[str, Any]) -> Policy:
    """Policy ``name`` from its ARM ``properties`` (validated by the protocol model already):
    its base's rules, overridden by its ``contentFilters``; its blocklists on their sides."""
    base = (
        builtin(properties.get("basePolicyName") or DEFAULT_POLICY)
        or BUILTIN_POLICIES[DEFAULT_POLICY]
    )
    prompt, completion = dict(base.prompt), dict(base.completion)
    for item in properties.get("contentFilters") or []:
        key = canonical_filter(str(item.get("name", "")))
        if key is None:
            continue
        rule = CategoryRule(
            enabled=bool(item.get("enabled", True)),
            threshold=_threshold(item.get("severityThreshold")),
            blocking=bool(item.get("blocking", True)),
        )
        (prompt if item.get("source") == "Prompt" else completion)[key] = rule
    uses: dict[Side, list[BlocklistUse]] = {"Prompt": [], "Completion": []}
    for item in properties.get("customBlocklists") or []:
        use = BlocklistUse(item["blocklistName"], bool(item.get("blocking", True)))
        sides: tuple[Side, ...] = (
            (item["source"],)
            if item.get("source") in ("Prompt", "Completion")
            else ("Prompt", "Completion")
        )
        for side in sides:
            uses[side].append(use)
    for key, side in (("promptBlocklists", "Prompt"), ("completionBlocklists", "Completion")):
        for item in properties.get(key) or []:
            uses[side].append(BlocklistUse(item["blocklistName"], bool(item.get("blocking", True))))
    return replace(
        base,
        name=name,
        mode=properties.get("mode") or "Default",
        prompt=prompt,
        completion=completion,
        prompt_blocklists=tuple(uses["Prompt"]),
        completion_blocklists=tuple(uses["Completion"]),
    )


def builtin_properties(policy: Policy) -> dict[str, Any]:
    """A built-in policy's ARM ``properties`` (GET of ``raiPolicies/Microsoft.DefaultV2``)."""
    filters = []
    sides: tuple[Side, ...] = ("Prompt", "Completion")
    for side in sides:
        for key, rule in policy.rules(side).items():
            entry: dict[str, Any] = {
                "name": _ARM_NAMES.get(key, key),
                "blocking": rule.blocking,
                "enabled": rule.enabled,
                "source": side,
            }
            if key in CATEGORIES:
                entry["severityThreshold"] = rule.threshold.capitalize()
            filters.append(entry)
    return {
        "type": "SystemManaged",
        "mode": policy.mode,
        "contentFilters": filters,
        "customBlocklists": [],
    }


def dumps(properties: dict[str, Any]) -> str:
    """Stored form of a policy's properties."""
    return json.dumps(properties, sort_keys=True)
