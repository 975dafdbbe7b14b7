"""What a checklist is made of and what checking it produces — shapes only, no engine.

A **rule** item names a registered check and its parameters; a **judged** item is a yes/no question the
inspector's model answers with a reason. Checking every item gives a `Verdict`: one `ItemVerdict` per item and the
decision (accept, revise with feedback, reject). Records store these shapes, so this module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator


class RuleItem(BaseModel):
    """A check done by code: `rule` names a registered rule, `params` are its keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    rule: str
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    required: bool = True  # False = advisory: reported, never blocks acceptance
    hard: bool | None = None  # None = the rule's default; a hard failure rejects instead of asking for a revision

    @property
    def kind(self) -> Literal["rule"]:
        return "rule"


class JudgedItem(BaseModel):
    """A yes/no question the inspector's LLM answers from the trajectory, with a reason."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    question: str
    rubric: str = ""
    required: bool = True

    @property
    def kind(self) -> Literal["judged"]:
        return "judged"

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be empty")
        return value


def _item_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "rule" if "rule" in value else "judged"
    return "rule" if isinstance(value, RuleItem) else "judged"


ChecklistItem = Annotated[
    Union[Annotated[RuleItem, Tag("rule")], Annotated[JudgedItem, Tag("judged")]],
    Discriminator(_item_tag),
]


@dataclass(frozen=True)
class ItemResult:
    """What a rule function returns."""

    passed: bool
    reason: str  # stored in the verdict (may name the expected value)
    feedback: str | None = None  # what the solver is told instead of `reason` (e.g. never the reference value)


class ItemVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["rule", "judged"]
    passed: bool
    reason: str
    required: bool = True
    hard: bool = False
    # Judged items: the span of the trajectory the judge quoted as its evidence (checked to occur in it).
    evidence: str = ""
    # No verdict: the judge gave no usable answer (no quote, a quote not in the trajectory, a reason that only
    # restates the question), or an audit could not check the item. It neither passes nor blocks acceptance.
    not_judged: bool = False


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemVerdict] = Field(default_factory=list)
    decision: Literal["accept", "revise", "reject"]
    score: float  # fraction of items passed (1.0 for an empty checklist)
    feedback: str = ""  # failed items as instructions for the solver's revision; "" when accepted cleanly
    usage: dict[str, Any] = Field(default_factory=dict)  # the judge call's tokens/cost

    def failed(self) -> list[ItemVerdict]:
        return [v for v in self.items if not v.passed]

    def item(self, item_id: str) -> ItemVerdict:
        for v in self.items:
            if v.id == item_id:
                return v
        raise KeyError(item_id)


__all__ = ["RuleItem", "JudgedItem", "ChecklistItem", "ItemResult", "ItemVerdict", "Verdict"]
