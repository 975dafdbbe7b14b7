"""The one dataset record (DESIGN §10) and crash-safe JSONL storage.

A record holds a DataScience-Instruct conversation (the `# Instruction / # Data` user prompt and ONE assistant
message with <Execute> inline), how it was checked (checklist + verdict), what rewards need (reference answer,
reward_spec) and where it came from (source hashes, execution mode, models, usage).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synth.checklist.items import ChecklistItem, JudgedItem, RuleItem, Verdict
from synth.llm.base import Usage
from synth.protocol import instruction_of
from synth.sources.ref import SourceRef
from synth.trajectory import Trajectory

log = logging.getLogger(__name__)

RewardMethod = Literal["qa", "datatask", "openresearch"]
VerifiedBy = Literal["given", "program", "consensus", "none"]


class Reference(BaseModel):
    """A task's reference answer and how it was verified (stored on the record)."""

    model_config = ConfigDict(extra="forbid")

    value: Any = None
    verified_by: VerifiedBy = "none"
    program: str | None = Field(None, description="The verifier program whose output is the reference.")
    output: str | None = Field(None, description="What that program printed in its sandbox.")

    @property
    def verified(self) -> bool:
        return self.verified_by != "none" and self.value is not None

    @classmethod
    def coerce(cls, value: Any) -> "Reference | None":
        """A Reference from a Reference, its dict, or a bare value (an unverified guess); None stays None."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict) and "verified_by" in value:
            return cls.model_validate(value)
        return cls(value=value, verified_by="none")


class RewardSpec(BaseModel):
    """What the RL reward needs (upstream parquet column `reward_spec`)."""

    model_config = ConfigDict(extra="forbid")

    method: RewardMethod
    ground_truth: Any = None
    checklist: list[ChecklistItem] = Field(default_factory=list)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["interaction", "reasoning"]
    category: str
    difficulty: str | None = None
    messages: list[dict[str, str]]
    checklist: list[ChecklistItem] = Field(default_factory=list)
    verdict: Verdict | None = None
    reference: Reference | None = None
    reward_spec: RewardSpec
    sources: list[SourceRef] = Field(default_factory=list)
    mode: Literal["script", "session"] | None = None  # None for reasoning records (nothing executed)
    models: dict[str, str] = Field(default_factory=dict)  # role -> model spec
    usage: dict[str, Any] = Field(default_factory=dict)
    revisions: int = 0
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    task_id: str | None = None  # the id of the user's task (`synth generate --tasks`)
    seed: dict[str, Any] | None = None  # the task seed the questioner wrote the task over (synth/seeds.py)
    # With --solves k: how many of k independent solves agreed with the verified reference (empirical difficulty).
    solves: dict[str, Any] | None = None
    # Reasoning records only.
    variant: str | None = None  # e.g. "distilled" | "refined"
    keywords: list[str] | None = None

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        return Reference.coerce(value)

    @field_validator("messages")
    @classmethod
    def _user_then_one_assistant(cls, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        roles = [m.get("role") for m in messages]
        if roles[-2:] != ["user", "assistant"] or any(r == "assistant" for r in roles[:-1]):
            raise ValueError(f"messages must end with one user message and ONE assistant message, got roles {roles}")
        if any("content" not in m for m in messages):
            raise ValueError("every message needs `content`")
        return messages

    @property
    def prompt(self) -> str:
        return self.messages[-2]["content"]

    @property
    def completion(self) -> str:
        return self.messages[-1]["content"]

    @classmethod
    def from_trajectory(
        cls,
        trajectory: Trajectory,
        *,
        category: str,
        sources: Sequence[Any] = (),
        instruction: str | None = None,
        checklist: Sequence[RuleItem | JudgedItem] = (),
        verdict: Verdict | None = None,
        reference: Any = None,
        reward_method: RewardMethod | None = None,
        open_ended: bool = False,
        difficulty: str | None = None,
        models: dict[str, str] | None = None,
        usage: Usage | dict[str, Any] | None = None,
        revisions: int = 0,
        **extra: Any,
    ) -> "Record":
        """An interaction record from a finished episode.

        `sources` are the episode's sources (SourceRef, dicts or (name, sha256) pairs); `instruction` defaults to
        the `# Instruction` part of the prompt. The reward method defaults to `openresearch` for an open-ended
        category (its checklist says `open_ended: true`), `qa` when there is a VERIFIED reference answer (its
        value is the ground truth), else `datatask` — an unverified guess is never a reward's ground truth.
        """
        refs = [SourceRef.coerce(s).model_copy(update={"path": None}) for s in sources]  # records hold no paths
        task = instruction if instruction is not None else instruction_of(trajectory.prompt)
        reference = Reference.coerce(reference)
        verified = reference is not None and reference.verified
        method = reward_method or ("openresearch" if open_ended else "qa" if verified else "datatask")
        items = list(checklist)
        if usage is None:
            usage = trajectory.usage
        return cls(
            id=record_id(refs, task),
            kind="interaction",
            category=category,
            difficulty=difficulty,
            messages=[dict(m) for m in trajectory.messages()],
            checklist=items,
            verdict=verdict,
            reference=reference,
            reward_spec=RewardSpec(method=method, ground_truth=reference.value if verified else None,
                                   checklist=items),
            sources=refs,
            mode=trajectory.mode,
            models=dict(models) if models else ({"solver": trajectory.model} if trajectory.model else {}),
            usage=usage.to_dict() if isinstance(usage, Usage) else dict(usage),
            revisions=revisions,
            **extra,
        )


def record_id(sources: Iterable[Any], instruction: str, *, variant: str | None = None) -> str:
    """A stable id: the same task text over the same source contents gives the same id, whatever the file order
    or names. `variant` separates records of one task that must coexist (e.g. distilled vs refined)."""
    hashes = sorted(SourceRef.coerce(s).sha256 for s in sources)
    text = " ".join(instruction.split())
    payload = json.dumps({"sources": hashes, "instruction": text, "variant": variant}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def write_records(path: Path | str, records: Iterable[Record], *, append: bool = True) -> int:
    """Write records as JSON lines, flushing and fsyncing after each so an accepted record survives a crash.

    Appending to a file whose last line was torn by a crash first cuts that partial line off (it can never be
    read back), so the new records start on a line of their own. Returns how many records were written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if append:
        _drop_torn_tail(path)
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            count += 1
    return count


def _drop_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data_end = fh.seek(0, os.SEEK_END)
        # Scan back for the last newline; everything after it is the torn line.
        pos, keep = data_end, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            cut = chunk.rfind(b"\n")
            if cut != -1:
                keep = pos + cut + 1
                break
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted write", path, data_end - keep)
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path | str) -> list[Record]:
    """Read a JSONL file of records. A torn (unparseable) LAST line — a crash mid-write — is skipped with a
    warning; a bad line anywhere else is corruption and raises ValueError naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"records file not found: {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s:%d: skipping a torn last line (%s)", path, number, exc)
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from None
        try:
            records.append(Record.model_validate(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "record"
            raise ValueError(f"{path}:{number}: not a valid record ({where}: {first['msg']})") from None
    return records


__all__ = ["Record", "Reference", "VerifiedBy", "RewardSpec", "SourceRef", "record_id", "write_records", "read_records"]
