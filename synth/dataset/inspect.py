"""`synth inspect DATA`: audit any trajectory dataset — are its `<Execute>` blocks what the code really prints, and
does it pass the checklist?

For each trajectory (synth/dataset/trajectories.py reads ours, ms-swift / TRL `messages`, rl parquet rows): parse
the protocol, find the files its prompt names (synth/dataset/workspaces.py), re-run its cells in a fresh sandbox
and classify every `<Execute>` block (synth/dataset/replay.py), then evaluate the checklist over the replayed
trajectory and workspace: rule items by code, judged items by the inspector model when one is given. In an audit
the two execution items are answered by the replay itself: `execute_blocks_authentic` fails on a `different`
block, `replay_reproduces` on a different or non-deterministic one; blocks that cannot be verified (missing
files, a file that is not the one the trajectory ran on) leave them without a verdict.

The output folder holds `verdicts.jsonl` (one row per input row, written as rows finish, rewritten in input order
at the end), `stats.json` and `report.html` (synth/dataset/inspect_report.py). A row that cannot be read or
replayed gets `status: error` and its reason; the others go on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, Literal

import yaml
from pydantic import Field

from synth.checklist import (
    ItemVerdict,
    JudgedItem,
    RuleContext,
    RuleItem,
    RuleSetupError,
    Verdict,
    combine_items,
    get_rule,
    load_checklist,
    validate_items,
)
from synth.checklist.evaluation import decide, evaluate
from synth.checklist.judge import split_votes
from synth.config import RunConfig
from synth.dataset.inspect_report import (
    compute_stats,
    weak_inspector,
    worst_rows,
    write_html,
)
from synth.dataset.replay import (
    Authenticity,
    build_trajectory,
    classify,
    detect_mode,
    read_assistant,
    recorded_result,
    replay,
)
from synth.dataset.trajectories import (
    DEFAULT_MAX_CHARS,
    AuditInputError,
    AuditRow,
    read_trajectories,
)
from synth.dataset.workspaces import FileResolver, ResolvedFiles
from synth.errors import SynthError
from synth.hashing import path_sha256
from synth.jsonl import append_jsonl
from synth.llm.base import ChatModel, Usage
from synth.sandbox import get_sandbox
from synth.sandbox.base import Limits
from synth.sources.ref import SourceRef

DEFAULT_CATEGORY = "data_analysis"
REPLAY_RULES = ("execute_blocks_authentic", "replay_reproduces")  # answered by the audit's own replay
WORKSPACE_RULES = ("file_created", "file_nonempty", "table_has_no_nulls")  # need the replayed workspace
_HASH_LIMIT = 512 * 1024 * 1024


class InspectError(SynthError, ValueError):
    """The audit cannot start (bad input, bad checklist, bad output folder); the message says what and where."""


class InspectConfig(RunConfig):
    """Everything `synth inspect` needs."""

    path_fields: ClassVar[tuple[str, ...]] = ("data", "sources", "workspaces", "checklist", "checklists", "out",
                                              "roles")

    data: Path = Field(..., description="A run directory, records/messages JSONL, ms-swift JSON, or a Parquet file "
                                        "(rl export, sft export).", json_schema_extra={"cli": False})
    sources: Path | None = Field(None, description="Folder holding the files the prompts name (default: the run's "
                                                   "sources, from its config.yaml).")
    workspaces: Path | None = Field(None, description="Folder of per-task workspaces (folders or archives, e.g. the "
                                                      "RL workspaces of DataScience-Instruct).")
    category: str | None = Field(None, description="Check every row against this category's checklist (default: "
                                                   "the row's own checklist or category, else data_analysis).")
    checklist: Path | None = Field(None, description="A checklist YAML file (`items:`) used for every row.")
    checklists: Path | None = Field(None, description="Directory of checklist YAML files overriding the built-ins.")
    inspector_model: str | None = Field(None, description="Model spec that answers the judged items (`?votes=k` "
                                                          "samples k judgments, majority wins); none = rules only.")
    base_url: str | None = Field(None, description="Base URL for openai:… model specs.")
    out: Path | None = Field(None, description="Output folder (default inspections/<input>-<time>).")
    replay: bool = Field(True, description="Re-run the code to verify every <Execute> block (--no-replay checks "
                                           "the recorded outputs only).")
    mode: Literal["auto", "script", "session"] = Field(
        "auto", description="Execution mode of the replay: auto = as recorded, else detected from the code.")
    concurrency: int = Field(2, ge=1, le=64, description="Trajectories inspected at once.")
    limit: int | None = Field(None, ge=1, description="Inspect only the first N rows.")
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=1000, description="Rows longer than this are reported, not "
                                                                  "inspected.")
    cell_timeout_s: float = Field(60.0, gt=0, description="Wall-clock seconds per replayed cell.",
                                  json_schema_extra={"cli": "--cell-timeout"})
    backend: Literal["local", "docker"] = Field("local", description="Sandbox backend of the replay.")
    roles: Path | None = Field(None, description="Directory of role YAML files (the inspector's prompt).")
    calibrate: bool = Field(False, description="Plant known defects into the run's accepted records and report "
                                               "what the checklist and inspector catch (DATA is a run).")


EventHook = Callable[[str, dict[str, Any]], None]


# --- checking one row --------------------------------------------------------------------------------------------


@dataclass
class Auditor:
    """Checks rows: shared by `synth inspect` and calibration (one per audit)."""

    config: InspectConfig
    sandbox: Any
    resolver: FileResolver
    work_dir: Path
    model: ChatModel | None = None
    votes: int = 1
    _checklist_file: list[RuleItem | JudgedItem] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.config.checklist is not None:
            self._checklist_file = read_checklist_file(self.config.checklist)
        elif self.config.category is not None:
            load_checklist(self.config.category, self.config.checklists)  # fail now, not on every row

    @property
    def limits(self) -> Limits:
        return Limits(timeout_s=self.config.cell_timeout_s)

    def checklist_for(self, row: AuditRow) -> tuple[list[RuleItem | JudgedItem], str]:
        if self._checklist_file is not None:
            items, label = list(self._checklist_file), f"file {self.config.checklist}"
        elif self.config.category is not None:
            items, label = list(load_checklist(self.config.category, self.config.checklists).items), \
                f"category {self.config.category}"
        elif isinstance(row.checklist, list) and row.checklist:
            own = validate_items(row.checklist, where=f"{row.where} checklist")
            try:  # today's standing items of its category, with the row's own (task) items on top
                standing = load_checklist(row.category or "", self.config.checklists)
                rules = {i.id: i.rule for i in standing.items if isinstance(i, RuleItem)}
                # An item the standing list has is today's; a rule twin keeps the row's params (a task re-param).
                own = [i for i in own if i.id not in {s.id for s in standing.items}
                       or (isinstance(i, RuleItem) and rules.get(i.id) == i.rule)]
                items, label = combine_items(standing.items, own), f"category {row.category} + the row's own items"
            except SynthError:
                items, label = own, "the row's own"
        else:
            category = row.category or DEFAULT_CATEGORY
            try:
                items = list(load_checklist(category, self.config.checklists).items)
                label = f"category {category}"
            except SynthError:
                items = list(load_checklist(DEFAULT_CATEGORY, self.config.checklists).items)
                label = f"category {DEFAULT_CATEGORY} (no checklist for {category!r})"
        extra = [{"id": "protocol_valid", "rule": "protocol_valid",
                  "description": "The trajectory follows the five-action protocol"}]
        if self.config.replay:
            extra.append({"id": "execute_blocks_authentic", "rule": "execute_blocks_authentic",
                          "description": "Every <Execute> block is what its code prints"})
        have = {i.rule for i in items if isinstance(i, RuleItem)} | {i.id for i in items}
        missing = [e for e in extra if e["rule"] not in have and e["id"] not in have]
        return (validate_items([*missing, *items], where="audit checklist") if missing else items), label

    async def audit(self, row: AuditRow, index: int) -> dict[str, Any]:
        started = time.monotonic()
        base = {"index": index, "id": row.id, "where": row.where, "format": row.format}
        if row.error is not None:
            return {**base, "status": "error", "reason": row.error}
        files = await asyncio.to_thread(self.resolver.resolve, row)
        files_out = {"found": sorted(files.files), "missing": files.missing, "notes": files.notes}
        if row.assistant is None:
            return {**base, "status": "no_trajectory", "files": files_out,
                    "reason": "the row holds a prompt but no assistant message: nothing to replay"}
        read = read_assistant(row.assistant)
        if not read.cells and read.answer is None:
            why = read.issues[0] if read.issues else "no actions"
            return {**base, "status": "error", "files": files_out,
                    "reason": f"not a five-action trajectory ({why})"}
        mode, mode_source = self._mode(row, read.codes())
        sources, unverifiable = _sources(row, files)
        workspaces: list[Path] = []
        try:
            if self.config.replay:
                first = await self._replay(files, read.codes(), mode, index, workspaces)
                auth = classify(read.cells, first, unverifiable=unverifiable)
                if auth.of("different"):  # tampering, or output that changes between runs?
                    second = await self._replay(files, read.codes(), mode, index, workspaces)
                    auth = classify(read.cells, first, second, unverifiable=unverifiable)
                trusted = {b.cell for b in auth.blocks if b.verdict != "not_reproducible"}
                results = [r if (c.number in trusted or c.recorded is None) else recorded_result(c.recorded)
                           for c, r in zip(read.cells, first.results)]
                state, initial, workspace = first.final, first.initial, first.workspace
            else:
                auth = Authenticity()
                results = [recorded_result(c.recorded) for c in read.cells]
                state = initial = workspace = None
            ctx = RuleContext(trajectory=build_trajectory(row.prompt, read, results, mode), workspace=workspace,
                              state=state, initial_state=initial, sources=sources, reference=row.reference,
                              sandbox=self.sandbox, limits=self.limits, assistant_text=row.assistant)
            items, checklist_label = self.checklist_for(row)
            verdict = await self.evaluate(items, ctx, auth)
        finally:
            for ws in workspaces:
                await asyncio.to_thread(shutil.rmtree, ws, True)
        return {
            **base, "status": "inspected", "category": row.category, "checklist": checklist_label,
            "mode": mode, "mode_source": mode_source, "files": files_out, "protocol_issues": read.issues,
            "replayed": self.config.replay, "blocks": [b.to_dict() for b in auth.blocks],
            "authenticity": auth.counts(), "decision": verdict.decision, "accepted": verdict.decision == "accept",
            "failed_items": [v.id for v in verdict.items if not v.passed and not v.not_judged and v.required],
            "not_judged": [v.id for v in verdict.items if v.not_judged],
            "verdict": verdict.model_dump(mode="json"), "duration_s": round(time.monotonic() - started, 3),
        }

    def _mode(self, row: AuditRow, codes: list[str]) -> tuple[str, str]:
        if self.config.mode != "auto":
            return self.config.mode, "given (--mode)"
        if row.mode:
            return row.mode, "recorded"
        mode, why = detect_mode(codes)
        return mode, f"detected: {why}"

    async def _replay(self, files: ResolvedFiles, codes: list[str], mode: str, index: int,
                      workspaces: list[Path]) -> Any:
        ws = self.work_dir / f"row-{index}-{len(workspaces)}"
        workspaces.append(ws)
        return await asyncio.to_thread(replay, self.sandbox, files.files, codes, mode=mode, limits=self.limits,
                                       workspace=ws)

    async def evaluate(self, items: list[RuleItem | JudgedItem], ctx: RuleContext, auth: Authenticity) -> Verdict:
        replaying = self.config.replay

        def ours(item: RuleItem | JudgedItem) -> str | None:
            """Why the audit answers this item itself (None: the checklist engine does)."""
            if isinstance(item, JudgedItem):
                return None if self.model is not None else "no inspector model given (--inspector-model)"
            if item.rule in REPLAY_RULES:
                return "replay"
            if not replaying and item.rule in WORKSPACE_RULES:
                return "not checked without a replay (--no-replay)"
            return None

        evaluated = [i for i in items if ours(i) is None]
        found: dict[str, ItemVerdict] = {}
        usage: dict[str, Any] = {}
        if evaluated:
            try:
                verdict = await evaluate(evaluated, ctx, self.model, roles_dir=self.config.roles, votes=self.votes)
                found, usage = {v.id: v for v in verdict.items}, verdict.usage
            except RuleSetupError:
                for item in evaluated:  # without a replay some rules cannot run: those are not checked
                    try:
                        found.update({v.id: v for v in (await evaluate([item], ctx, self.model,
                                                                         roles_dir=self.config.roles,
                                                                         votes=self.votes)).items})
                    except RuleSetupError as exc:
                        found[item.id] = _no_verdict(item, f"not checked: {exc}")
        merged = []
        for item in items:
            why = ours(item)
            if item.id in found:
                merged.append(found[item.id])
            elif why == "replay":
                merged.append(_replay_verdict(item, auth, replaying))
            else:
                merged.append(_no_verdict(item, why or "not checked"))
        return decide(items, merged, Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                                           float(usage.get("cost_usd", 0.0))))


def _no_verdict(item: RuleItem | JudgedItem, reason: str) -> ItemVerdict:
    kind = "rule" if isinstance(item, RuleItem) else "judged"
    return ItemVerdict(id=item.id, kind=kind, passed=False, reason=reason, required=item.required, not_judged=True)


def _replay_verdict(item: RuleItem, auth: Authenticity, replaying: bool) -> ItemVerdict:
    spec = get_rule(item.rule)
    hard = spec.hard if item.hard is None else item.hard

    def verdict(passed: bool | None, reason: str) -> ItemVerdict:
        return ItemVerdict(id=item.id, kind="rule", passed=bool(passed), reason=reason, required=item.required,
                           hard=hard, not_judged=passed is None)

    if not replaying:
        return verdict(None, "not checked without a replay (--no-replay)")
    different = auth.of("different")
    unsure = auth.of("not_reproducible")
    listed = "; ".join(f"block {b.block} (cell {b.cell}): {b.detail}" for b in different[:3])
    if item.rule == "execute_blocks_authentic":
        if different:
            return verdict(False, f"{len(different)} <Execute> block(s) differ from what the code prints — {listed}")
        if unsure:
            return verdict(None, f"{len(unsure)} block(s) could not be verified: {unsure[0].detail}")
        counts = auth.counts()
        return verdict(True, f"all {len(auth.blocks)} <Execute> blocks reproduced ({counts['identical']} identical, "
                             f"{counts['normalized']} normalized)")
    random = [b for b in unsure if b.detail.startswith("non-deterministic")]
    if random:
        return verdict(False, f"cell {random[0].cell} prints different output on every run (non-deterministic)")
    if different:
        return verdict(False, f"the replay prints something else — {listed}")
    if unsure:
        return verdict(None, f"could not replay faithfully: {unsure[0].detail}")
    return verdict(True, f"all {len(auth.blocks)} cells reproduced in a fresh session")


def _sources(row: AuditRow, files: ResolvedFiles) -> tuple[list[SourceRef], str | None]:
    """The files as sources (hashed: the row's recorded hash when it has one) and why a replay difference may
    be the input's fault rather than the trajectory's."""
    recorded = {s["name"]: s["sha256"] for s in row.sources}
    refs, problems = [], []
    for name, path in files.files.items():
        small = path.is_dir() or path.stat().st_size <= _HASH_LIMIT
        actual = _hash(path) if small else ""
        expected = recorded.get(name) or actual
        if name in recorded and small and actual != expected:
            problems.append(f"{name} is not the file the record was made on (sha256 differs)")
        refs.append(SourceRef(name=name, sha256=expected, path=path))
    if files.missing:
        problems.insert(0, f"missing file(s): {', '.join(files.missing)}")
    problems += [n for n in files.notes if "the prompt shows" in n]
    return refs, ("; ".join(problems) or None)


def _hash(path: Path) -> str:
    if path.is_dir():
        return path_sha256(path)
    stat = path.stat()
    return _file_hash(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4096)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:  # many rows name the same file: hash it once
    return path_sha256(path)


def read_checklist_file(path: Path) -> list[RuleItem | JudgedItem]:
    """Items of a checklist YAML file: a mapping with `items`, or a bare list of items."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InspectError(f"--checklist {path}: cannot read it ({' '.join(str(exc).split())[:160]})") from None
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InspectError(f"--checklist {path}: expected a list of items or a mapping with `items`")
    return validate_items(items, where=str(path))


# --- the whole input ---------------------------------------------------------------------------------------------


@dataclass
class InspectSummary:
    out: Path
    stats: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def verdicts_path(self) -> Path:
        return self.out / "verdicts.jsonl"

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"


def default_out(data: Path) -> Path:
    return Path("inspections").resolve() / f"{Path(data).stem or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_out(config: InspectConfig) -> Path:
    out = config.out or default_out(config.data)
    if (out / "records.jsonl").exists():
        raise InspectError(f"--out {out} is a run directory; write the inspection to a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_inspector(config: InspectConfig, cache_path: Path) -> tuple[ChatModel | None, int]:
    if not config.inspector_model:
        return None, 1
    from synth.llm import load_role_models

    spec, votes = split_votes(config.inspector_model)
    try:
        return load_role_models({"inspector": spec}, base_url=config.base_url, cache_path=cache_path)["inspector"], votes
    except ValueError as exc:
        raise InspectError(f"--inspector-model: {exc}") from None


@asynccontextmanager
async def opened_auditor(config: InspectConfig, out: Path, model: ChatModel | None = None,
                         votes: int | None = None) -> AsyncIterator[Auditor]:
    """An Auditor for one audit into `out`: the inspector model loaded unless given (and closed after), the
    scratch folder removed after."""
    owned = model is None
    if model is None:
        model, loaded_votes = load_inspector(config, out / "cache.sqlite")
        votes = votes or loaded_votes
    work = out / "work"
    resolver = FileResolver(sources=config.sources, workspaces=config.workspaces, cache_dir=work / "workspaces")
    try:
        yield Auditor(config, get_sandbox(config.backend), resolver, work, model, votes or 1)
    finally:
        if owned and model is not None and hasattr(model, "aclose"):
            await model.aclose()
        shutil.rmtree(work, ignore_errors=True)


async def audit_rows(auditor: Auditor, rows: list[AuditRow], *, concurrency: int, on_row: Callable[[dict], None]
                     | None = None) -> list[dict[str, Any]]:
    """Audit rows concurrently; a row whose audit crashes gets `status: error` with the exception."""
    gate = asyncio.Semaphore(concurrency)
    results: list[dict[str, Any] | None] = [None] * len(rows)

    async def one(index: int, row: AuditRow) -> None:
        async with gate:
            try:
                result = await auditor.audit(row, index)
            except (RuleSetupError, InspectError):
                raise
            except Exception as exc:  # one row's failure (sandbox, judge backend …) must not stop the audit
                result = {"index": index, "id": row.id, "where": row.where, "format": row.format, "status": "error",
                          "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            results[index] = result
            if on_row is not None:
                on_row(result)

    await asyncio.gather(*(one(n, row) for n, row in enumerate(rows)))
    return [r for r in results if r is not None]


async def inspect_data(config: InspectConfig, *, model: ChatModel | None = None, votes: int | None = None,
                       on_event: EventHook | None = None) -> InspectSummary:
    """Audit `config.data`; `model` replaces loading `config.inspector_model`."""

    started = time.monotonic()
    config = config.resolved()
    try:
        rows = list(read_trajectories(config.data, max_chars=config.max_chars))
    except AuditInputError as exc:
        raise InspectError(str(exc)) from None
    rows = rows[: config.limit] if config.limit else rows
    out = prepare_out(config)
    verdicts = out / "verdicts.jsonl"
    verdicts.write_text("", encoding="utf-8")
    emit = on_event or (lambda kind, payload: None)
    emit("start", {"total": len(rows)})

    def finished(result: dict[str, Any]) -> None:
        append_jsonl(verdicts, result)
        outcome = "accepted" if result.get("accepted") else "error" if result["status"] != "inspected" else "rejected"
        emit("done", {"episode": result["id"], "outcome": outcome})

    async with opened_auditor(config, out, model, votes) as auditor:
        results = await audit_rows(auditor, rows, concurrency=config.concurrency, on_row=finished)
    partial = verdicts.with_name(verdicts.name + ".part")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in results),
                       encoding="utf-8")
    partial.replace(verdicts)
    stats = compute_stats(results, inspector=config.inspector_model, votes=auditor.votes,
                          wall_s=time.monotonic() - started, data=config.data)
    (out / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    prompts = {r["id"]: (rows[r["index"]].prompt, rows[r["index"]].assistant or "") for r in worst_rows(results)}
    write_html(stats, results, out / "report.html", prompts)
    return InspectSummary(out=out, stats=stats, rows=results)


def run_inspect(config: InspectConfig, *, on_event: EventHook | None = None) -> InspectSummary:
    return asyncio.run(inspect_data(config, on_event=on_event))


__all__ = ["InspectConfig", "InspectError", "InspectSummary", "Auditor", "audit_rows", "inspect_data",
           "run_inspect", "opened_auditor", "read_checklist_file", "load_inspector", "weak_inspector", "prepare_out",
           "DEFAULT_CATEGORY"]
