"""What an inspection found, for people: `stats.json` numbers, the terminal summary and a self-contained HTML page
(authenticity rate, Execute classes, failing items, rows that could not be inspected, the worst examples with
their differing blocks marked). The style follows `synth report` (synth/dataset/report.py)."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

from synth.dataset.replay import BLOCK_CLASSES


def compute_stats(rows: list[dict[str, Any]], *, inspector: str | None, votes: int, wall_s: float,
                  data: Path | str) -> dict[str, Any]:
    inspected = [r for r in rows if r.get("status") == "inspected"]
    blocks = Counter()
    for row in inspected:
        blocks.update(row.get("authenticity") or {})
    total_blocks = sum(blocks[c] for c in BLOCK_CLASSES)
    items: dict[str, Counter] = {}
    judged = Counter()
    for row in inspected:
        for item in row["verdict"]["items"]:
            counts = items.setdefault(item["id"], Counter())
            counts["not_judged" if item.get("not_judged") else "passed" if item["passed"] else "failed"] += 1
            if item["kind"] == "judged" and inspector:
                judged["verdicts"] += 1
                judged["empty"] += bool(item.get("not_judged"))
    failing = sorted(((k, v["failed"]) for k, v in items.items() if v["failed"]), key=lambda kv: (-kv[1], kv[0]))
    reasons = Counter(str(r.get("reason") or "?")[:90] for r in rows if r.get("status") != "inspected")
    accepted = sum(bool(r.get("accepted")) for r in inspected)
    return {
        "data": str(data),
        "rows": len(rows),
        "inspected": len(inspected),
        "errors": sum(r.get("status") == "error" for r in rows),
        "no_trajectory": sum(r.get("status") == "no_trajectory" for r in rows),
        "accepted": accepted,
        "acceptance": round(accepted / len(inspected), 4) if inspected else None,
        "blocks": {c: blocks[c] for c in BLOCK_CLASSES},
        # Verified authentic (identical or normalized) among all replayed blocks; not_reproducible counts against.
        "authenticity_rate": round((blocks["identical"] + blocks["normalized"]) / total_blocks, 4)
        if total_blocks else None,
        "rows_with_different_blocks": sum(bool((r.get("authenticity") or {}).get("different")) for r in inspected),
        "items": {k: dict(v) for k, v in sorted(items.items())},
        "failing_items": dict(failing),
        "not_inspected_reasons": dict(reasons.most_common(10)),
        "judged": {"inspector": inspector, "votes": votes, "verdicts": judged["verdicts"], "empty": judged["empty"],
                   "weak_evidence": weak_inspector(inspector)},
        "wall_time_s": round(wall_s, 2),
    }


def weak_inspector(spec: str | None) -> bool:
    """The embedded models answer judged items as weak evidence (measured: they pass almost everything)."""
    return bool(spec) and spec.strip().lower().startswith(("embedded", "llamacpp"))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_lines(stats: dict[str, Any]) -> list[str]:
    """The terminal summary, as plain lines (the command prints them)."""
    b = stats["blocks"]
    lines = [
        f"{stats['rows']} rows: {stats['inspected']} inspected, {stats['errors']} not readable, "
        f"{stats['no_trajectory']} without a trajectory; {stats['accepted']} pass the checklist "
        f"(acceptance {_rate(stats['acceptance'])})",
        f"<Execute> blocks: {b['identical']} identical, {b['normalized']} normalized, {b['different']} different, "
        f"{b['not_reproducible']} not reproducible — authenticity {_rate(stats['authenticity_rate'])}",
    ]
    if stats["failing_items"]:
        lines.append("failing items: " + ", ".join(f"{k} ×{v}" for k, v in list(stats["failing_items"].items())[:8]))
    for reason, count in list(stats["not_inspected_reasons"].items())[:5]:
        lines.append(f"not inspected ×{count}: {reason}")
    judged = stats["judged"]
    if judged["inspector"]:
        lines.append(f"judged verdicts: {judged['verdicts']}, of which {judged['empty']} empty (no usable quote: not "
                     f"judged) — inspector {judged['inspector']}")
        if judged["weak_evidence"]:
            lines.append("note: the inspector is an embedded model; its judged items are weak evidence — rely on the "
                         "rule items, or pass a stronger --inspector-model")
    else:
        lines.append("judged items: not judged (no --inspector-model); rule items only")
    return lines


def worst_rows(rows: list[dict[str, Any]], n: int = 5) -> list[dict[str, Any]]:
    inspected = [r for r in rows if r.get("status") == "inspected" and not r.get("accepted")]
    return sorted(inspected, key=lambda r: (-(r["authenticity"].get("different", 0)), -len(r["failed_items"]),
                                            r["index"]))[:n]


_CLASS_COLOURS = {"identical": "#2e7d32", "normalized": "#558b2f", "different": "#c62828",
                  "not_reproducible": "#ef6c00"}

_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1000px;color:#222;
padding:0 1rem}h1{font-size:1.5rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;
vertical-align:top}.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f5f7fa;border-radius:6px;
padding:.6rem 1rem}.card b{display:block;font-size:1.3rem}.cls{color:#fff;font-size:.75rem;padding:.05rem .4rem;
border-radius:3px}.act{border-left:4px solid;margin:.4rem 0;padding:.2rem .6rem;background:#fafafa}
.tag{color:#fff;font-size:.75rem;padding:.05rem .4rem;border-radius:3px}pre{white-space:pre-wrap;
word-break:break-word;margin:.3rem 0;font-size:.85rem}pre.prompt{background:#fffde7;padding:.5rem}
pre.stray{color:#b71c1c}details summary{cursor:pointer;color:#555}"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def render_html(stats: dict[str, Any], rows: list[dict[str, Any]], prompts: dict[str, tuple[str, str]] | None = None) -> str:
    """The page. `prompts` (row id → (prompt, assistant text)) lets the worst examples show their trajectory."""
    from synth.dataset.report import render_trajectory

    b = stats["blocks"]
    cards = [("rows", stats["rows"]), ("inspected", stats["inspected"]), ("pass the checklist", stats["accepted"]),
             ("acceptance", _rate(stats["acceptance"])), ("authenticity", _rate(stats["authenticity_rate"])),
             ("rows with a different block", stats["rows_with_different_blocks"]),
             ("not inspected", stats["errors"] + stats["no_trajectory"])]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ds-synth inspection — "
             f"{_esc(Path(stats['data']).name)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Inspection — {_esc(stats['data'])}</h1><div class='cards'>"
             + "".join(f"<div class='card'>{_esc(k)}<b>{_esc(v)}</b></div>" for k, v in cards) + "</div>"]
    parts.append("<h2>&lt;Execute&gt; blocks</h2><table><tr><th>class</th><th>blocks</th><th>meaning</th></tr>")
    meaning = {"identical": "what the code prints, byte for byte",
               "normalized": "equal after normalising paths, whitespace and float noise",
               "different": "the code prints something else",
               "not_reproducible": "cannot tell: missing or changed file, timeout, non-deterministic output"}
    for name in b:
        parts.append(f"<tr><td><span class='cls' style='background:{_CLASS_COLOURS[name]}'>{name}</span></td>"
                     f"<td>{b[name]}</td><td>{meaning[name]}</td></tr>")
    parts.append("</table><h2>Checklist items</h2><table><tr><th>item</th><th>passed</th><th>failed</th>"
                 "<th>no verdict</th></tr>")
    for item, counts in sorted(stats["items"].items(), key=lambda kv: (-kv[1].get("failed", 0), kv[0])):
        parts.append(f"<tr><td>{_esc(item)}</td><td>{counts.get('passed', 0)}</td><td>{counts.get('failed', 0)}"
                     f"</td><td>{counts.get('not_judged', 0)}</td></tr>")
    parts.append("</table>")
    judged = stats["judged"]
    if judged["inspector"]:
        note = " The inspector is an embedded model: judged items are weak evidence." if judged["weak_evidence"] else ""
        parts.append(f"<p>Judged items by <b>{_esc(judged['inspector'])}</b> ({judged['votes']} vote(s)): "
                     f"{judged['verdicts']} verdicts, {judged['empty']} empty (no usable quote).{note}</p>")
    else:
        parts.append("<p>Judged items were not judged (no inspector model): rule items only.</p>")
    if stats["not_inspected_reasons"]:
        parts.append("<h2>Rows not inspected</h2><table><tr><th>reason</th><th>rows</th></tr>"
                     + "".join(f"<tr><td>{_esc(k)}</td><td>{v}</td></tr>"
                               for k, v in stats["not_inspected_reasons"].items()) + "</table>")
    worst = worst_rows(rows)
    if worst:
        parts.append("<h2>Worst examples</h2>")
    for row in worst:
        failed = ", ".join(row["failed_items"]) or "-"
        parts.append(f"<h3>{_esc(row['id'])} <small>({_esc(row['where'])})</small></h3>"
                     f"<p>decision <b>{_esc(row['decision'])}</b>; failed: {_esc(failed)}</p><table>"
                     "<tr><th>block</th><th>class</th><th>detail</th></tr>")
        for block in row["blocks"]:
            colour = _CLASS_COLOURS[block["class"]]
            parts.append(f"<tr><td>{block['block']}</td><td><span class='cls' style='background:{colour}'>"
                         f"{block['class']}</span></td><td>{_esc(block['detail'])}</td></tr>")
        parts.append("</table><ul>" + "".join(
            f"<li><b>{_esc(v['id'])}</b>: {_esc(v['reason'])}</li>" for v in row["verdict"]["items"]
            if not v["passed"] and not v.get("not_judged")) + "</ul>")
        if prompts and row["id"] in prompts:
            prompt, assistant = prompts[row["id"]]
            parts.append(f"<details><summary>trajectory</summary><pre class='prompt'>{_esc(prompt)}</pre>"
                         f"{render_trajectory(assistant)}</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(stats: dict[str, Any], rows: list[dict[str, Any]], out: Path | str,
               prompts: dict[str, tuple[str, str]] | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(stats, rows, prompts), encoding="utf-8")
    return out


__all__ = ["weak_inspector", "compute_stats", "summary_lines", "worst_rows", "render_html", "write_html"]
