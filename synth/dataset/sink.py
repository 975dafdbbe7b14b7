"""Where a run's episodes land: records.jsonl (accepted) and rejected.jsonl, append-only, deduplicated by id.

Writing the same record or the same rejected episode again (a node re-run after a crash, a resubmitted Ray job)
is a no-op, so a resumed run neither loses nor duplicates rows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from synth.jsonl import append_jsonl, read_jsonl
from synth.protocol import instruction_of


def record_instruction(row: dict[str, Any]) -> str:
    """The task text of a stored record (its user prompt's `# Instruction`)."""
    messages = row.get("messages") or []
    return instruction_of(messages[-2]["content"]) if len(messages) >= 2 else ""


class RecordSink:
    """Append-only JSONL outputs with id-based dedupe; safe to call again for something already written."""

    def __init__(self, records_path: Path, rejected_path: Path) -> None:
        self.records_path = records_path
        self.rejected_path = rejected_path
        self._lock = asyncio.Lock()
        self.record_ids: set[str] = set()
        self.rejected_episodes: set[str] = set()
        self.accepted_instructions: list[str] = []
        self.done_episodes: set[str] = set()
        for row in read_jsonl(records_path):
            self.record_ids.add(row.get("id", ""))
            self.accepted_instructions.append(record_instruction(row))
        for row in read_jsonl(rejected_path):
            self.rejected_episodes.add(row.get("episode_id", ""))
            self.done_episodes.add(row.get("episode_id", ""))

    async def write_record(self, record: dict[str, Any], episode_id: str) -> bool:
        """Append `record` unless its id is already written; True if it was appended."""
        async with self._lock:
            self.done_episodes.add(episode_id)
            if record["id"] in self.record_ids:
                return False
            append_jsonl(self.records_path, record)
            self.record_ids.add(record["id"])
            self.accepted_instructions.append(record_instruction(record))
            return True

    async def write_rejected(self, row: dict[str, Any]) -> bool:
        async with self._lock:
            if row["episode_id"] in self.rejected_episodes:
                return False
            append_jsonl(self.rejected_path, row)
            self.rejected_episodes.add(row["episode_id"])
            self.done_episodes.add(row["episode_id"])
            return True


__all__ = ["RecordSink", "record_instruction"]
