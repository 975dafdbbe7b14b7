"""The five-action grammar (DESIGN §3): one parser used by solver, inspector, rewards, serve and eval.

`parse(text)` never fails: it splits any string into typed actions and the text between them, so that
`render(parse(t)) == t` byte for byte, malformed input included. `validate` reports what is wrong with the
structure, with positions. The rules of the parser:

- An opening tag `<K>` is closed by the next `</K>` unless another `<K>` comes first; everything in between is
  the action's content (other tags inside it are reported as nesting by `validate`).
- An opening tag with no matching close is an unclosed action that runs up to the next opening tag (or the end).
- `<Execute>` content is opaque: program output may print anything, tag strings included.
- A closing tag with no open action is kept as text and reported as an unexpected closing tag.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence, Union

TAGS: tuple[str, ...] = ("Analyze", "Understand", "Code", "Execute", "Answer")
# The ten tag strings in the order upstream added them to the tokenizer.
SPECIAL_TOKENS: list[str] = [s for tag in TAGS for s in (f"<{tag}>", f"</{tag}>")]

_TAG_RE = re.compile(r"<(/?)(" + "|".join(TAGS) + r")>")
_OPEN_RE = re.compile(r"<(" + "|".join(TAGS) + r")>")
_CLOSE_RE = re.compile(r"</(" + "|".join(TAGS) + r")>")

ActionKind = Literal["Analyze", "Understand", "Code", "Execute", "Answer"]


@dataclass(frozen=True)
class Action:
    """One tagged action. `start`/`end` span the whole action in the source, tags included."""

    kind: str
    content: str
    start: int
    end: int
    closed: bool = True

    @property
    def raw(self) -> str:
        close = f"</{self.kind}>" if self.closed else ""
        return f"<{self.kind}>{self.content}{close}"


@dataclass(frozen=True)
class Text:
    """Characters between actions: usually whitespace; anything else is stray text."""

    content: str
    start: int
    end: int

    @property
    def raw(self) -> str:
        return self.content


Segment = Union[Action, Text]


@dataclass
class Parsed:
    segments: list[Segment] = field(default_factory=list)

    @property
    def actions(self) -> list[Action]:
        return [s for s in self.segments if isinstance(s, Action)]

    def of_kind(self, kind: str) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def answer(self) -> str | None:
        """Body of the first closed <Answer>, or None."""
        for a in self.of_kind("Answer"):
            if a.closed:
                return a.content
        return None

    def render(self) -> str:
        return "".join(s.raw for s in self.segments)


@dataclass(frozen=True)
class ProtocolIssue:
    code: str  # unclosed_tag | unexpected_closing_tag | text_outside_tags | nested_tag | model_wrote_execute |
    #            missing_answer | not_starting_with_analyze | content_after_answer | empty
    position: int  # character offset into the validated text
    message: str

    def __str__(self) -> str:
        return f"{self.code} at {self.position}: {self.message}"


def parse(text: str) -> Parsed:
    segments: list[Segment] = []
    pos = 0
    text_start = 0
    n = len(text)
    while pos < n:
        m = _OPEN_RE.search(text, pos)
        if m is None:
            break
        kind = m.group(1)
        body_start = m.end()
        close_at = text.find(f"</{kind}>", body_start)
        same_open = text.find(f"<{kind}>", body_start)
        closed = close_at != -1 and (same_open == -1 or close_at < same_open)
        if closed:
            end = close_at + len(kind) + 3
            content = text[body_start:close_at]
        else:
            nxt = _OPEN_RE.search(text, body_start)
            end = nxt.start() if nxt else n
            content = text[body_start:end]
        if m.start() > text_start:
            segments.append(Text(text[text_start : m.start()], text_start, m.start()))
        segments.append(Action(kind, content, m.start(), end, closed))
        pos = text_start = end
    if text_start < n:
        segments.append(Text(text[text_start:], text_start, n))
    return Parsed(segments)


def render(parsed: Parsed) -> str:
    return parsed.render()


def validate(text: str, *, require_answer: bool = True, model_written: bool = False) -> list[ProtocolIssue]:
    """Every structural problem of `text`, in order of position.

    `model_written=True` means `text` is what the model generated (so an <Execute> in it was invented);
    `require_answer=False` validates a partial trajectory (e.g. one turn that ends in <Code>).
    """
    parsed = parse(text)
    issues: list[ProtocolIssue] = []
    actions = parsed.actions
    if not actions:
        issues.append(ProtocolIssue("empty", 0, "no <Analyze>/<Understand>/<Code>/<Answer> action found"))
    elif actions[0].kind != "Analyze":
        issues.append(
            ProtocolIssue("not_starting_with_analyze", actions[0].start, f"starts with <{actions[0].kind}>, not <Analyze>")
        )
    for seg in parsed.segments:
        if isinstance(seg, Text):
            issues.extend(_text_issues(seg))
            continue
        if not seg.closed:
            issues.append(ProtocolIssue("unclosed_tag", seg.start, f"<{seg.kind}> is never closed"))
        if seg.kind == "Execute":
            if model_written:
                issues.append(ProtocolIssue("model_wrote_execute", seg.start, "<Execute> is written by the harness, not the model"))
            continue
        inner = _TAG_RE.search(seg.content)
        if inner:
            issues.append(
                ProtocolIssue("nested_tag", seg.start + len(seg.kind) + 2 + inner.start(),
                              f"{inner.group(0)} inside <{seg.kind}>")
            )
    answers = [a for a in actions if a.kind == "Answer"]
    if not answers:
        if require_answer:
            issues.append(ProtocolIssue("missing_answer", len(text), "no <Answer>…</Answer> at the end"))
    else:
        after = answers[0].end
        rest = text[after:]
        if rest.strip():
            offset = after + (len(rest) - len(rest.lstrip()))
            issues.append(ProtocolIssue("content_after_answer", offset, "content follows </Answer>"))
    issues.sort(key=lambda i: i.position)
    return issues


def is_well_formed(text: str, *, require_answer: bool = True) -> bool:
    return not validate(text, require_answer=require_answer)


def _text_issues(seg: Text) -> list[ProtocolIssue]:
    issues = []
    for m in _CLOSE_RE.finditer(seg.content):
        issues.append(ProtocolIssue("unexpected_closing_tag", seg.start + m.start(), f"{m.group(0)} without an opening tag"))
    stray = _CLOSE_RE.sub("", seg.content)
    if stray.strip():
        lead = len(seg.content) - len(seg.content.lstrip())
        snippet = stray.strip()[:40].replace("\n", " ")
        issues.append(ProtocolIssue("text_outside_tags", seg.start + lead, f"text outside any tag: {snippet!r}"))
    return issues


_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(code_body: str) -> str:
    """The code to run for one <Code> body: its first ```python / ```py block, else its first bare ``` block,
    else the whole body stripped. An unterminated fence (generation cut short) runs to the end of the body."""
    bare: str | None = None
    for m in _FENCE_RE.finditer(code_body):
        lang = m.group(1).lower()
        if lang in ("python", "py", "python3"):
            return m.group(2).strip("\n")
        if lang == "" and bare is None:
            bare = m.group(2).strip("\n")
    if bare is not None:
        return bare
    return code_body.strip()


def format_size(nbytes: int) -> str:
    """Upstream-style size: one decimal in 1024-based units — "532B", "10.6KB", "1.2MB", "3.4GB"."""
    if nbytes < 1024:
        return f"{nbytes}B"
    size = nbytes / 1024
    for unit in ("KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


FileSpec = Union[Path, str, tuple[str, int], tuple[str, str]]


def build_user_prompt(instruction: str, files: Iterable[FileSpec] | None = None, *, root: Path | None = None) -> str:
    """The single user message upstream models were trained on.

    `# Instruction\\n{task}` and, when there are files, `\\n\\n# Data\\n` followed by one
    `File i:\\n{json.dumps({"name", "size"}, indent=4)}\\n\\n` per file (upstream API format). A file is a path
    (name relative to `root` when given, else its file name; size read from disk) or a `(name, size)` pair
    where size is bytes or an already formatted string.
    """
    entries = [_file_entry(f, root) for f in (files or ())]
    prompt = f"# Instruction\n{instruction}"
    if not entries:
        return prompt
    data = "".join(
        f"File {i}:\n{json.dumps({'name': name, 'size': size}, indent=4, ensure_ascii=False)}\n\n"
        for i, (name, size) in enumerate(entries, start=1)
    )
    return f"{prompt}\n\n# Data\n{data}"


def _file_entry(spec: FileSpec, root: Path | None) -> tuple[str, str]:
    if isinstance(spec, tuple):
        name, size = spec
        return str(name), size if isinstance(size, str) else format_size(int(size))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if root is not None:
        try:
            name = path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            raise ValueError(f"data file {path} is not inside the workspace root {root}") from None
    else:
        name = path.name
    return name, format_size(path.stat().st_size)


@dataclass(frozen=True)
class UserPrompt:
    """A `# Instruction / # Data` prompt read back: the task text and the files it names (name, size as shown)."""

    instruction: str
    files: list[tuple[str, str]] = field(default_factory=list)


_FILE_ENTRY_RE = re.compile(r"File \d+:\n(\{.*?\})\n", re.DOTALL)


def parse_user_prompt(prompt: str) -> UserPrompt:
    """The inverse of `build_user_prompt`. A prompt without the `# Instruction` heading is all instruction;
    file entries that are not the upstream JSON are skipped."""
    text = prompt or ""
    body = text.split("# Instruction\n", 1)[1] if text.startswith("# Instruction\n") else \
        text.split("# Instruction", 1)[-1]
    instruction, found, data = body.rpartition("\n\n# Data\n")
    if not found:
        instruction, found, data = body.rpartition("\n# Data")
    if not found:
        instruction, data = body, ""
    files: list[tuple[str, str]] = []
    for m in _FILE_ENTRY_RE.finditer(data + "\n"):
        try:
            entry = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            files.append((entry["name"], str(entry.get("size", ""))))
    return UserPrompt(instruction.strip(), files)


def instruction_of(prompt: str) -> str:
    """The task text of a `# Instruction / # Data` prompt."""
    return parse_user_prompt(prompt).instruction


def execute_spans(assistant_text: str) -> list[tuple[int, int]]:
    """Character spans `[start, end)` from `<Execute>` through `</Execute>` (loss-masked in SFT).
    An unclosed <Execute> is masked to the end of its segment."""
    return [(a.start, a.end) for a in parse(assistant_text).actions if a.kind == "Execute"]


def split_for_masking(assistant_text: str) -> list[tuple[str, bool]]:
    """The text as consecutive `(piece, trainable)` chunks: Execute spans are not trainable. Joining the pieces
    gives back the text exactly."""
    chunks: list[tuple[str, bool]] = []
    pos = 0
    for start, end in execute_spans(assistant_text):
        if start > pos:
            chunks.append((assistant_text[pos:start], True))
        chunks.append((assistant_text[start:end], False))
        pos = end
    if pos < len(assistant_text):
        chunks.append((assistant_text[pos:], True))
    return chunks


def wrap(kind: str, content: str) -> str:
    if kind not in TAGS:
        raise ValueError(f"unknown action {kind!r}; expected one of {', '.join(TAGS)}")
    return f"<{kind}>{content}</{kind}>"


__all__: Sequence[str] = [
    "TAGS", "SPECIAL_TOKENS", "Action", "Text", "Parsed", "ProtocolIssue", "parse", "render", "validate",
    "is_well_formed", "extract_code", "format_size", "build_user_prompt", "UserPrompt", "parse_user_prompt",
    "instruction_of", "execute_spans", "split_for_masking",
    "wrap",
]
