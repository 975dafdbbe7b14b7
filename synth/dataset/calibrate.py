"""`synth inspect --calibrate RUN`: how good is the inspector? Plant known defects (synth/dataset/defects.py) into
a run's accepted records, inspect the clean and the planted variants the way `synth inspect` does, and report per
defect the share caught and by which items, and the share of clean records still accepted.

A planted variant is *caught* when the inspection does not accept it. Recall is counted over the records whose
clean variant is accepted (a record already rejected clean says nothing about a defect); an item *catches* a
defect when it fails on the variant but not on the clean record. Plants that change code get their <Execute>
blocks re-made from a real run first, so the only defect in them is the planted one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.dataset.defects import (
    DEFECTS,
    PLANTS,
    PlantContext,
    needs_outputs,
    with_outputs,
)
from synth.dataset.inspect import (
    Auditor,
    EventHook,
    InspectConfig,
    InspectError,
    audit_rows,
    opened_auditor,
    prepare_out,
)
from synth.dataset.inspect_report import weak_inspector
from synth.dataset.replay import read_assistant, replay
from synth.dataset.trajectories import AuditInputError, AuditRow, read_trajectories
from synth.llm.base import ChatModel


@dataclass
class Variant:
    record: str  # the clean record's id
    defect: str  # "clean" or a DEFECTS key
    row: AuditRow


@dataclass
class CalibrationResult:
    out: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


async def make_variants(rows: list[AuditRow], auditor: Auditor, scratch: Path,
                        defects: list[str] | None = None) -> list[Variant]:
    """The clean rows and one planted variant per applicable defect; code-changing plants re-run for real."""
    variants: list[Variant] = []
    for n, row in enumerate(rows):
        variants.append(Variant(row.id, "clean", row))
        others = rows[n + 1:] + rows[:n]
        files = auditor.resolver.resolve(row).files
        for defect in defects or list(DEFECTS):
            planted = PLANTS[defect](row, PlantContext(others, files, scratch / f"{n}-{defect}"))
            if planted is None:
                continue
            if defect in needs_outputs:
                planted = await _with_real_outputs(planted, auditor, scratch / f"{n}-{defect}-run")
            variants.append(Variant(row.id, defect, dataclasses.replace(planted, id=f"{row.id}~{defect}")))
    return variants


async def _with_real_outputs(row: AuditRow, auditor: Auditor, workspace: Path) -> AuditRow:
    read = read_assistant(row.assistant or "")
    files = auditor.resolver.resolve(row).files
    mode = row.mode or "script"
    ran = await asyncio.to_thread(replay, auditor.sandbox, files, read.codes(), mode=mode, limits=auditor.limits,
                                  workspace=workspace)
    shutil.rmtree(workspace, ignore_errors=True)
    outputs = [r.output() for cell, r in zip(read.cells, ran.results) if cell.recorded is not None]
    return dataclasses.replace(row, assistant=with_outputs(row.assistant, outputs))


def summarize(variants: list[Variant], results: list[dict[str, Any]], *, inspector: str | None,
              votes: int) -> dict[str, Any]:
    by_key = {(v.record, v.defect): r for v, r in zip(variants, results)}

    def failed(result: dict[str, Any] | None) -> set[str]:
        return set((result or {}).get("failed_items") or [])

    def judged_failed(result: dict[str, Any] | None) -> set[str]:
        return {i["id"] for i in ((result or {}).get("verdict") or {}).get("items", [])
                if i["kind"] == "judged" and not i["passed"] and not i.get("not_judged") and i.get("required", True)}

    clean = {v.record: by_key[(v.record, "clean")] for v in variants if v.defect == "clean"}
    good = {rid for rid, r in clean.items() if r.get("accepted")}
    rejected_by: Counter = Counter()
    for rid, r in clean.items():
        if rid not in good:
            rejected_by.update(failed(r) or {r.get("status", "?")})
    per_defect: dict[str, Any] = {}
    for defect, description in DEFECTS.items():
        planted = [v for v in variants if v.defect == defect]
        counted = [v for v in planted if v.record in good]
        caught = [v for v in counted if not by_key[(v.record, defect)].get("accepted")]
        items: Counter = Counter()
        for v in caught:
            items.update(failed(by_key[(v.record, defect)]) - failed(clean[v.record]))
        # The judge alone: a judged item that fails on the variant and did not on the clean record.
        judge = [v for v in counted if judged_failed(by_key[(v.record, defect)]) - judged_failed(clean[v.record])]
        per_defect[defect] = {
            "description": description, "planted": len(planted), "counted": len(counted), "caught": len(caught),
            "recall": round(len(caught) / len(counted), 4) if counted else None,
            "judge_recall": round(len(judge) / len(counted), 4) if counted and inspector else None,
            "caught_by": dict(items.most_common()),
            "missed": [v.record for v in counted if by_key[(v.record, defect)].get("accepted")],
        }
    judged = Counter()
    for r in results:
        for item in (r.get("verdict") or {}).get("items", []):
            if item["kind"] == "judged" and inspector:
                judged["verdicts"] += 1
                judged["empty"] += bool(item.get("not_judged"))
    return {
        "records": len(clean), "clean_accepted": len(good),
        "clean_acceptance": round(len(good) / len(clean), 4) if clean else None,
        "clean_rejected_by": dict(rejected_by.most_common()),
        "defects": per_defect,
        "judged": {"inspector": inspector, "votes": votes, "verdicts": judged["verdicts"], "empty": judged["empty"],
                   "weak_evidence": weak_inspector(inspector)},
    }


def calibration_lines(summary: dict[str, Any]) -> list[str]:
    """The calibration table, as plain lines."""
    lines = [f"{summary['records']} accepted records; clean acceptance {summary['clean_accepted']}/"
             f"{summary['records']} ({_pct(summary['clean_acceptance'])})"
             + (f", clean rejected by: {_items(summary['clean_rejected_by'])}" if summary["clean_rejected_by"] else "")]
    lines.append(f"{'defect':<22} {'caught':>9} {'recall':>7}  caught by")
    for defect, row in summary["defects"].items():
        caught = f"{row['caught']}/{row['counted']}" if row["counted"] else "n/a"
        lines.append(f"{defect:<22} {caught:>9} {_pct(row['recall']):>7}  {_items(row['caught_by']) or '-'}")
    judged = summary["judged"]
    if judged["inspector"]:
        lines.append(f"judged verdicts: {judged['verdicts']}, {judged['empty']} empty — inspector {judged['inspector']}"
                     + ("; an embedded inspector's judged items are weak evidence" if judged["weak_evidence"] else ""))
    else:
        lines.append("rules only (no --inspector-model): judged items not judged")
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _items(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in list(counts.items())[:4])


async def calibrate(config: InspectConfig, *, model: ChatModel | None = None, votes: int | None = None,
                    defects: list[str] | None = None, on_event: EventHook | None = None) -> CalibrationResult:
    """Calibrate the checklist (and the inspector model, when given) on the accepted records of `config.data`."""

    started = time.monotonic()
    config = config.resolved()
    try:
        rows = [r for r in read_trajectories(config.data, max_chars=config.max_chars)
                if r.error is None and r.assistant is not None]
    except AuditInputError as exc:
        raise InspectError(str(exc)) from None
    rows = rows[: config.limit] if config.limit else rows
    if not rows:
        raise InspectError(f"{config.data}: no readable accepted records to calibrate on")
    unknown = sorted(set(defects or []) - set(DEFECTS))
    if unknown:
        raise InspectError(f"unknown defect(s) {', '.join(unknown)}; known: {', '.join(DEFECTS)}")
    out = prepare_out(config)
    async with opened_auditor(config, out, model, votes) as auditor:
        variants = await make_variants(rows, auditor, auditor.work_dir / "plants", defects)
        emit = on_event or (lambda kind, payload: None)
        emit("start", {"total": len(variants)})
        results = await audit_rows(
            auditor, [v.row for v in variants], concurrency=config.concurrency,
            on_row=lambda r: emit("done", {"episode": r["id"], "outcome": "accepted" if r.get("accepted")
                                           else "error" if r["status"] != "inspected" else "rejected"}))
    for variant, result in zip(variants, results):
        result.update(record=variant.record, defect=variant.defect)
    summary = summarize(variants, results, inspector=config.inspector_model, votes=auditor.votes)
    summary["wall_time_s"] = round(time.monotonic() - started, 2)
    (out / "calibration.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "verdicts.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                                for r in results), encoding="utf-8")
    return CalibrationResult(out, summary, results)


def run_calibration(config: InspectConfig, *, on_event: EventHook | None = None) -> CalibrationResult:
    return asyncio.run(calibrate(config, on_event=on_event))


__all__ = ["Variant", "CalibrationResult", "make_variants", "summarize", "calibration_lines", "calibrate",
           "run_calibration"]
