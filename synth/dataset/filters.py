"""Quality filters over records (DESIGN §10): selection (category, turns, tokens, verdict), exact and near-duplicate
removal (MinHash/LSH over the instruction text) and decontamination against benchmark questions (word n-gram
overlap). Every removal is reported with its reason and what it collided with.

Duplicates are looked for within one (kind, variant) group: a refined reasoning trace shares its question with
the distilled one on purpose, and both are kept.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from synth.dataset.record import Record
from synth.errors import SynthError
from synth.protocol import execute_spans, instruction_of

QUESTION_COLUMNS = ("question", "utterance", "query", "prompt", "instruction", "problem", "input", "text")
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_MIN_QUESTION_WORDS = 4  # shorter benchmark questions ("Who won?") would match everything


class FilterError(SynthError, ValueError):
    """Bad filter input (unreadable benchmark file, no question column …); one line saying what and where."""


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dedup: bool = False
    near_dup_threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity of instruction shingles")
    decontaminate: list[Path] = Field(default_factory=list, description="Benchmark question files (JSONL/TSV/CSV/JSON)")
    ngram: int = Field(8, ge=2, le=50, description="Word n-gram size for decontamination")
    contamination_threshold: float = Field(0.5, gt=0.0, le=1.0,
                                           description="Share of a question's n-grams found in a prompt to drop it")
    categories: list[str] = Field(default_factory=list)
    kind: Literal["interaction", "reasoning"] | None = None
    min_turns: int | None = Field(None, ge=0)
    max_turns: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    verdict: Literal["accept"] | None = None


@dataclass
class Removal:
    id: str
    reason: str  # category | kind | min_turns | max_turns | max_tokens | verdict | exact_duplicate | near_duplicate | contaminated
    detail: str


@dataclass
class FilterReport:
    total: int
    kept: int
    removed: list[Removal] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.removed).most_common())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "removed": len(self.removed), "by_reason": self.counts(),
                "removals": [asdict(r) for r in self.removed]}

    def summary(self) -> str:
        lines = [f"{self.kept} of {self.total} records kept, {len(self.removed)} removed"]
        lines += [f"  {reason}: {count}" for reason, count in self.counts().items()]
        return "\n".join(lines)


# --- measures --------------------------------------------------------------------------------------------------


def instruction_text(record: Record) -> str:
    """The task text of a record: the `# Instruction` part of its prompt."""
    return instruction_of(record.prompt).strip()


def turn_count(record: Record) -> int:
    """Model turns: each executed cell ends one, and the final answering turn is one more."""
    return len(execute_spans(record.completion)) + 1


def token_estimate(record: Record) -> int:
    """Tokens of the whole conversation, estimated as word and punctuation pieces (no tokenizer needed; BPE
    tokenizers give the same order of magnitude)."""
    return sum(len(_TOKEN_RE.findall(m["content"])) for m in record.messages)


def _normalize(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


def _shingles(text: str, size: int = 5) -> set[str]:
    norm = _normalize(text)
    if len(norm) <= size:
        return {norm}
    return {norm[i:i + size] for i in range(len(norm) - size + 1)}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# --- dedup -----------------------------------------------------------------------------------------------------


def find_duplicates(records: Sequence[Record], threshold: float = 0.8) -> dict[str, Removal]:
    """Records that repeat an earlier one (same kind and variant): exact after normalising case, punctuation and
    spacing, or near (MinHash LSH candidates confirmed by the true Jaccard similarity of 5-character shingles)."""
    from datasketch import MinHash, MinHashLSH

    removed: dict[str, Removal] = {}
    groups: dict[tuple[str, str | None], list[Record]] = {}
    for record in records:
        groups.setdefault((record.kind, record.variant), []).append(record)
    for group in groups.values():
        exact: dict[str, str] = {}
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        shingles: dict[str, set[str]] = {}
        for record in group:
            norm = _normalize(instruction_text(record))
            if norm in exact:
                removed[record.id] = Removal(record.id, "exact_duplicate", f"same instruction as {exact[norm]}")
                continue
            grams = _shingles(norm)
            signature = MinHash(num_perm=128)
            for gram in grams:
                signature.update(gram.encode("utf-8"))
            best = max(((_jaccard(grams, shingles[other]), other) for other in lsh.query(signature)), default=None)
            if best is not None and best[0] >= threshold:
                removed[record.id] = Removal(record.id, "near_duplicate",
                                             f"instruction {best[0]:.2f} similar to {best[1]}")
                continue
            exact[norm] = record.id
            shingles[record.id] = grams
            if record.id not in lsh:
                lsh.insert(record.id, signature)
    return removed


# --- decontamination -------------------------------------------------------------------------------------------


def load_questions(path: Path | str, column: str | None = None) -> list[str]:
    """Benchmark questions from a JSONL, JSON (list of objects), TSV or CSV file. The question column is
    `column`, else the first of QUESTION_COLUMNS present (case-insensitive)."""
    path = Path(path)
    if not path.is_file():
        raise FilterError(f"--decontaminate {path}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tsv", ".csv"):
            rows = list(csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix == ".json":
            rows = json.loads(text)
            if isinstance(rows, dict):
                rows = next((v for v in rows.values() if isinstance(v, list)), [rows])
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, csv.Error) as exc:
        raise FilterError(f"--decontaminate {path}: cannot read it as {suffix or 'JSONL'} ({exc})") from None
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        raise FilterError(f"--decontaminate {path}: no rows found")
    keys = {k.lower(): k for k in rows[0]}
    wanted = [column] if column else list(QUESTION_COLUMNS)
    key = next((keys[w.lower()] for w in wanted if w.lower() in keys), None)
    if key is None:
        raise FilterError(f"--decontaminate {path}: no question column (looked for {', '.join(wanted)}; "
                          f"found {', '.join(rows[0])})")
    return [str(r[key]) for r in rows if isinstance(r.get(key), str) and r[key].strip()]


@dataclass
class _Question:
    text: str
    source: str
    grams: set[tuple[str, ...]]


class ContaminationIndex:
    """Benchmark questions by word n-gram. A prompt is contaminated by a question when it contains at least
    `threshold` of that question's n-grams; a question shorter than `n` words counts as one n-gram of its own
    length (it must appear whole), and questions under 4 words are too generic to judge and are ignored."""

    def __init__(self, questions: Iterable[tuple[str, str]], n: int = 8, threshold: float = 0.5) -> None:
        self.n, self.threshold = n, threshold
        self.questions: list[_Question] = []
        self._by_gram: dict[tuple[str, ...], list[int]] = {}
        self.sizes: set[int] = set()
        for text, source in questions:
            words = _WORD_RE.findall(text.lower())
            if len(words) < _MIN_QUESTION_WORDS:
                continue
            size = min(n, len(words))
            grams = {tuple(words[i:i + size]) for i in range(len(words) - size + 1)}
            index = len(self.questions)
            self.questions.append(_Question(text, source, grams))
            self.sizes.add(size)
            for gram in grams:
                self._by_gram.setdefault(gram, []).append(index)

    def match(self, text: str) -> tuple[_Question, float] | None:
        """The benchmark question `text` overlaps most, with the overlap share, if it reaches the threshold."""
        words = _WORD_RE.findall(text.lower())
        hits: Counter = Counter()
        for size in self.sizes:
            for gram in {tuple(words[i:i + size]) for i in range(len(words) - size + 1)}:
                for index in self._by_gram.get(gram, ()):
                    hits[index] += 1
        best = None
        for index, count in hits.items():
            share = count / len(self.questions[index].grams)
            if share >= self.threshold and (best is None or share > best[1]):
                best = (self.questions[index], share)
        return best


def find_contaminated(records: Sequence[Record], index: ContaminationIndex) -> dict[str, Removal]:
    removed = {}
    for record in records:
        hit = index.match(record.prompt)
        if hit is not None:
            question, share = hit
            removed[record.id] = Removal(record.id, "contaminated",
                                         f"{share:.0%} of the {index.n}-grams of {question.source} question "
                                         f"{question.text[:80]!r}")
    return removed


# --- the whole filter ------------------------------------------------------------------------------------------


def _selection_reason(record: Record, config: FilterConfig) -> Removal | None:
    if config.kind and record.kind != config.kind:
        return Removal(record.id, "kind", f"kind {record.kind}")
    if config.categories and record.category not in config.categories:
        return Removal(record.id, "category", f"category {record.category}")
    if config.verdict and (record.verdict is None or record.verdict.decision != config.verdict):
        decision = record.verdict.decision if record.verdict else "none"
        return Removal(record.id, "verdict", f"verdict {decision}")
    turns = turn_count(record)
    if config.min_turns is not None and turns < config.min_turns:
        return Removal(record.id, "min_turns", f"{turns} turns < {config.min_turns}")
    if config.max_turns is not None and turns > config.max_turns:
        return Removal(record.id, "max_turns", f"{turns} turns > {config.max_turns}")
    if config.max_tokens is not None:
        tokens = token_estimate(record)
        if tokens > config.max_tokens:
            return Removal(record.id, "max_tokens", f"~{tokens} tokens > {config.max_tokens}")
    return None


def filter_records(records: Sequence[Record], config: FilterConfig) -> tuple[list[Record], FilterReport]:
    """Selection first, then decontamination, then dedup (so a contaminated record never shadows a clean one)."""
    removed: dict[str, Removal] = {}
    seen: set[str] = set()
    candidates = []
    for record in records:
        if record.id in seen:  # the same record listed twice (e.g. one run passed twice)
            removed.setdefault(record.id + "#repeat", Removal(record.id, "exact_duplicate", "same record id"))
            continue
        seen.add(record.id)
        reason = _selection_reason(record, config)
        if reason is None:
            candidates.append(record)
        else:
            removed[record.id] = reason
    if config.decontaminate:
        questions = [(q, path.name) for path in config.decontaminate for q in load_questions(path)]
        index = ContaminationIndex(questions, n=config.ngram, threshold=config.contamination_threshold)
        removed.update(find_contaminated(candidates, index))
        candidates = [r for r in candidates if r.id not in removed]
    if config.dedup:
        removed.update(find_duplicates(candidates, config.near_dup_threshold))
        candidates = [r for r in candidates if r.id not in removed]
    report = FilterReport(total=len(records), kept=len(candidates), removed=list(removed.values()))
    return candidates, report


__all__ = [
    "FilterConfig", "FilterError", "FilterReport", "Removal", "ContaminationIndex", "instruction_text",
    "turn_count", "token_estimate", "find_duplicates", "find_contaminated", "load_questions", "filter_records",
]
