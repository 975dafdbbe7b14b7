"""Dataset records, their JSONL storage, exports and publishing (DESIGN §10)."""

from synth.dataset.record import Record, RewardSpec, SourceRef, read_records, record_id, write_records

__all__ = ["Record", "RewardSpec", "SourceRef", "read_records", "record_id", "write_records"]
