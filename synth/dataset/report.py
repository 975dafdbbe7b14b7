"""`synth report RUN_DIR`: what a run produced and why things failed — acceptance per category and difficulty,
most-failed checklist items, revisions, tokens and cost, turn and token histograms, example trajectories — as a
rich terminal summary and a self-contained HTML page (plots inlined as base64 PNG).

Everything is computed from records.jsonl and rejected.jsonl (stats.json only adds wall time), so the report is
right for a run that was resumed or interrupted.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.dataset.filters import token_estimate, turn_count
from synth.dataset.record import read_records
from synth.errors import SynthError


class ReportError(SynthError, ValueError):
    """The run directory cannot be reported on; the message says what and where."""


@dataclass
class RunReport:
    run_dir: Path
    accepted: int
    rejected: int
    by_category: dict[str, dict[str, int]]
    by_difficulty: dict[str, dict[str, int]]
    failed_items: list[tuple[str, int, int]]  # (item id, failed, checked), most failed first
    revisions: dict[int, int]
    tokens: dict[str, int]
    cost_usd: float
    llm_calls: int
    turns: list[int]  # per accepted record
    conversation_tokens: list[int]  # estimated, per accepted record
    reject_reasons: list[tuple[str, int]]
    wall_time_s: float | None
    accepted_example: dict[str, Any] | None = None  # {"title", "prompt", "assistant"}
    rejected_example: dict[str, Any] | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)  # synth.verifier.verification_stats

    @property
    def acceptance(self) -> float | None:
        total = self.accepted + self.rejected
        return self.accepted / total if total else None


def _verification(run_dir: Path, rejected: list[dict[str, Any]]) -> dict[str, Any]:
    from synth.jsonl import read_jsonl
    from synth.verifier import verification_stats

    interaction = [r for r in read_jsonl(run_dir / "records.jsonl") if r.get("kind") == "interaction"]
    return verification_stats(interaction, [r for r in rejected if "stage" not in r]) if interaction or rejected \
        else {}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if not path.read_text(encoding="utf-8").endswith("\n"):
                break  # a torn last line left by a crash
            raise ReportError(f"{path}:{number}: not valid JSON") from None
    return rows


def build_report(run_dir: Path | str) -> RunReport:
    run_dir = Path(run_dir)
    if not (run_dir / "records.jsonl").is_file():
        raise ReportError(f"{run_dir}: not a run directory (no records.jsonl)")
    try:
        records = read_records(run_dir / "records.jsonl")
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    rejected = _read_rows(run_dir / "rejected.jsonl")
    by_category: dict[str, Counter] = defaultdict(Counter)
    by_difficulty: dict[str, Counter] = defaultdict(Counter)
    failed: Counter = Counter()
    checked: Counter = Counter()
    revisions: Counter = Counter()
    usage: Counter = Counter()
    for record in records:
        by_category[record.category]["accepted"] += 1
        by_difficulty[record.difficulty or "-"]["accepted"] += 1
        revisions[record.revisions] += 1
        _count_usage(usage, record.usage)
        if record.verdict is not None:
            _count_items(record.verdict.model_dump(mode="json"), failed, checked)
    reasons: Counter = Counter()
    for row in rejected:
        by_category[str(row.get("category") or row.get("stage") or "?")]["rejected"] += 1
        by_difficulty[str(row.get("difficulty") or "-")]["rejected"] += 1
        revisions[int(row.get("revisions") or 0)] += 1
        _count_usage(usage, row.get("usage") or {})
        for verdict in row.get("verdicts") or ([row["verdict"]] if row.get("verdict") else []):
            _count_items(verdict, failed, checked)
        reasons[str(row.get("reason") or "?").split("\n")[0][:100]] += 1
    stats = {}
    if (run_dir / "stats.json").is_file():
        try:
            stats = json.loads((run_dir / "stats.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            stats = {}
    report = RunReport(
        run_dir=run_dir,
        accepted=len(records),
        rejected=len(rejected),
        by_category={k: {"accepted": v["accepted"], "rejected": v["rejected"]} for k, v in sorted(by_category.items())},
        by_difficulty={k: {"accepted": v["accepted"], "rejected": v["rejected"]}
                       for k, v in sorted(by_difficulty.items())},
        failed_items=sorted(((k, failed[k], checked[k]) for k in checked if failed[k]), key=lambda t: (-t[1], t[0])),
        revisions=dict(sorted(revisions.items())),
        tokens={"prompt": int(usage["prompt_tokens"]), "completion": int(usage["completion_tokens"])},
        cost_usd=round(float(usage["cost_usd"]), 6),
        llm_calls=int(usage["llm_calls"]),
        turns=[turn_count(r) for r in records],
        conversation_tokens=[token_estimate(r) for r in records],
        reject_reasons=reasons.most_common(10),
        wall_time_s=stats.get("wall_time_s"),
        kinds=dict(Counter(r.kind for r in records)),
        verification=_verification(run_dir, rejected),
    )
    if records:
        best = max(records, key=turn_count)
        report.accepted_example = {"title": f"{best.category} / {best.difficulty or '-'} — {best.id}",
                                   "prompt": best.prompt, "assistant": best.completion}
    for row in rejected:
        assistant = _rejected_text(row)
        if assistant:
            report.rejected_example = {
                "title": f"{row.get('category', '?')} / {row.get('difficulty') or '-'} — {row.get('episode_id', '?')}",
                "prompt": (row.get("trajectory") or {}).get("prompt", ""), "assistant": assistant,
                "reason": str(row.get("reason") or ""),
            }
            break
    return report


def _count_usage(total: Counter, usage: dict[str, Any]) -> None:
    for key in ("prompt_tokens", "completion_tokens", "cost_usd", "llm_calls"):
        value = usage.get(key)
        if isinstance(value, (int, float)):
            total[key] += value


def _count_items(verdict: dict[str, Any], failed: Counter, checked: Counter) -> None:
    for item in verdict.get("items") or []:
        name = item.get("id") or "?"
        checked[name] += 1
        if not item.get("passed"):
            failed[name] += 1


def _rejected_text(row: dict[str, Any]) -> str:
    trajectory = row.get("trajectory")
    if not trajectory:
        return ""
    from synth.trajectory import Trajectory

    try:
        return Trajectory.from_dict(trajectory).assistant_text()
    except (KeyError, TypeError):
        return ""


# --- terminal --------------------------------------------------------------------------------------------------


def print_summary(report: RunReport, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rate = f"{report.acceptance:.0%}" if report.acceptance is not None else "-"
    console.print(f"[bold]{report.run_dir}[/bold]: {report.accepted} accepted, {report.rejected} rejected "
                  f"(acceptance {rate}); tokens {report.tokens['prompt']:,} prompt + {report.tokens['completion']:,} "
                  f"completion, {report.llm_calls} LLM calls, cost ${report.cost_usd:.4f}")
    for title, rows in (("category", report.by_category), ("difficulty", report.by_difficulty)):
        table = Table(title=f"Acceptance by {title}")
        for column in (title, "accepted", "rejected", "rate"):
            table.add_column(column, justify="left" if column == title else "right")
        for name, counts in rows.items():
            total = counts["accepted"] + counts["rejected"]
            table.add_row(name, str(counts["accepted"]), str(counts["rejected"]),
                          f"{counts['accepted'] / total:.0%}" if total else "-")
        console.print(table)
    if report.failed_items:
        table = Table(title="Most-failed checklist items")
        for column in ("item", "failed", "checked"):
            table.add_column(column)
        for name, fails, total in report.failed_items[:10]:
            table.add_row(name, str(fails), str(total))
        console.print(table)
    console.print("revisions: " + ", ".join(f"{k}: {v}" for k, v in report.revisions.items()))
    verification = report.verification
    if verification.get("accepted_by_reference"):
        accuracy = verification.get("accuracy_of_accepted_given")
        console.print("accepted by reference: " + ", ".join(f"{k}: {v}" for k, v in
                                                             verification["accepted_by_reference"].items())
                      + (f"; accuracy of accepted answers on given references: {accuracy:.0%}"
                         if accuracy is not None else ""))
        if verification.get("disagreements"):
            console.print("disagreements with the verified reference: " + ", ".join(
                f"{k.replace('_', ' ')}: {v}" for k, v in verification["disagreements"].items()))
    if report.turns:
        console.print(f"turns per accepted record: min {min(report.turns)}, max {max(report.turns)}, "
                      f"mean {sum(report.turns) / len(report.turns):.1f}")
    for reason, count in report.reject_reasons[:5]:
        console.print(f"rejected ×{count}: {reason}")


# --- HTML ------------------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(report: RunReport) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plots = []
    names = list(report.by_category)
    if names:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
        accepted = [report.by_category[n]["accepted"] for n in names]
        rejected = [report.by_category[n]["rejected"] for n in names]
        ax.barh(names, accepted, color="#2e7d32", label="accepted")
        ax.barh(names, rejected, left=accepted, color="#c62828", label="rejected")
        ax.set_xlabel("episodes")
        ax.legend(loc="lower right")
        plots.append(("Acceptance by category", _png(fig)))
    if report.failed_items:
        items = report.failed_items[:10][::-1]
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(items)))
        ax.barh([i[0] for i in items], [i[1] for i in items], color="#ef6c00")
        ax.set_xlabel("times failed")
        plots.append(("Most-failed checklist items", _png(fig)))
    for title, values, xlabel in (("Turns per accepted record", report.turns, "model turns"),
                                  ("Conversation length (estimated tokens)", report.conversation_tokens, "tokens")):
        fig, ax = plt.subplots(figsize=(6, 2.6))
        if values:
            if xlabel == "model turns":  # one bar per whole turn count, centred on it
                ax.hist(values, bins=[v - 0.5 for v in range(min(values), max(values) + 2)], color="#1565c0",
                        edgecolor="white")
                ax.xaxis.get_major_locator().set_params(integer=True)
            else:
                ax.hist(values, bins=min(20, max(1, len(values))), color="#1565c0", edgecolor="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("records")
        plots.append((title, _png(fig)))
    return plots


_ACTION_COLOURS = {"Analyze": "#1565c0", "Understand": "#6a1b9a", "Code": "#2e7d32", "Execute": "#616161",
                   "Answer": "#c62828"}


def render_trajectory(text: str) -> str:
    """The assistant message as HTML: one coloured block per action, Execute output collapsed."""
    from synth.protocol import Action, parse

    parts = []
    for segment in parse(text).segments:
        if not isinstance(segment, Action):
            if segment.content.strip():
                parts.append(f'<pre class="stray">{html.escape(segment.content.strip())}</pre>')
            continue
        body = html.escape(segment.content.strip("\n"))
        colour = _ACTION_COLOURS.get(segment.kind, "#333")
        if segment.kind == "Execute":
            lines = segment.content.strip("\n").count("\n") + 1
            parts.append(f'<details class="act act-execute" style="border-color:{colour}"><summary>Execute output '
                         f'({lines} line{"s" if lines != 1 else ""})</summary><pre>{body}</pre></details>')
        else:
            unclosed = "" if segment.closed else " (unclosed)"
            parts.append(f'<div class="act act-{segment.kind.lower()}" style="border-color:{colour}">'
                         f'<span class="tag" style="background:{colour}">{segment.kind}{unclosed}</span>'
                         f'<pre>{body}</pre></div>')
    return "\n".join(parts)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ds-synth run report — {{ name }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
td:first-child,th:first-child{text-align:left}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#f5f7fa;border-radius:6px;padding:.6rem 1rem}.card b{display:block;font-size:1.3rem}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{margin:0}.plots img{max-width:480px;border:1px solid #eee}
.act{border-left:4px solid;margin:.4rem 0;padding:.2rem .6rem;background:#fafafa}
.tag{color:#fff;font-size:.75rem;padding:.05rem .4rem;border-radius:3px}
pre{white-space:pre-wrap;word-break:break-word;margin:.3rem 0;font-size:.85rem}
pre.prompt{background:#fffde7;padding:.5rem}pre.stray{color:#b71c1c}details summary{cursor:pointer;color:#555}
</style></head><body>
<h1>Run report — {{ name }}</h1>
<div class="cards">
<div class="card">accepted<b>{{ r.accepted }}</b></div><div class="card">rejected<b>{{ r.rejected }}</b></div>
<div class="card">acceptance<b>{{ acceptance }}</b></div>
<div class="card">tokens (prompt / completion)<b>{{ "{:,}".format(r.tokens.prompt) }} / {{ "{:,}".format(r.tokens.completion) }}</b></div>
<div class="card">LLM calls<b>{{ r.llm_calls }}</b></div><div class="card">cost<b>${{ "%.4f"|format(r.cost_usd) }}</b></div>
{% if r.wall_time_s is not none %}<div class="card">wall time<b>{{ "%.0f"|format(r.wall_time_s) }} s</b></div>{% endif %}
</div>
<h2>Plots</h2><div class="plots">
{% for title, src in plots %}<figure><figcaption>{{ title }}</figcaption><img alt="{{ title }}" src="{{ src }}"></figure>{% endfor %}
</div>
{% for title, rows in tables %}<h2>Acceptance by {{ title }}</h2>
<table><tr><th>{{ title }}</th><th>accepted</th><th>rejected</th><th>rate</th></tr>
{% for name, c in rows.items() %}<tr><td>{{ name }}</td><td>{{ c.accepted }}</td><td>{{ c.rejected }}</td>
<td>{% if c.accepted + c.rejected %}{{ "%.0f"|format(100 * c.accepted / (c.accepted + c.rejected)) }}%{% else %}-{% endif %}</td></tr>{% endfor %}
</table>{% endfor %}
<h2>Most-failed checklist items</h2>
{% if r.failed_items %}<table><tr><th>item</th><th>failed</th><th>checked</th></tr>
{% for name, f, c in r.failed_items %}<tr><td>{{ name }}</td><td>{{ f }}</td><td>{{ c }}</td></tr>{% endfor %}</table>
{% else %}<p>No checklist item failed.</p>{% endif %}
{% if r.verification.accepted_by_reference %}<h2>Verification</h2><table><tr><th>accepted records by reference</th><th>count</th></tr>
{% for k, v in r.verification.accepted_by_reference.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
{% for k, v in r.verification.disagreements.items() %}<tr><td>{{ k | replace("_", " ") }}</td><td>{{ v }}</td></tr>{% endfor %}
{% if r.verification.accuracy_of_accepted_given is not none %}<tr><td>accuracy of accepted answers (given references)</td><td>{{ "%.0f%%" % (100 * r.verification.accuracy_of_accepted_given) }}</td></tr>{% endif %}
</table>{% endif %}
<h2>Revisions</h2><table><tr><th>revisions</th><th>episodes</th></tr>
{% for k, v in r.revisions.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{% if r.reject_reasons %}<h2>Reject reasons</h2><table><tr><th>reason</th><th>count</th></tr>
{% for reason, n in r.reject_reasons %}<tr><td>{{ reason }}</td><td>{{ n }}</td></tr>{% endfor %}</table>{% endif %}
{% for label, ex in examples %}<h2>Example {{ label }} trajectory</h2><p><b>{{ ex.title }}</b></p>
{% if ex.reason %}<p>Reason: {{ ex.reason }}</p>{% endif %}
<pre class="prompt">{{ ex.prompt }}</pre>{{ ex.html | safe }}{% endfor %}
</body></html>
"""


def render_html(report: RunReport) -> str:
    import jinja2

    examples = []
    for label, example in (("accepted", report.accepted_example), ("rejected", report.rejected_example)):
        if example:
            examples.append((label, {**example, "html": render_trajectory(example["assistant"])}))
    acceptance = f"{report.acceptance:.0%}" if report.acceptance is not None else "-"
    template = jinja2.Environment(autoescape=True).from_string(_TEMPLATE)
    return template.render(name=report.run_dir.name, r=report, acceptance=acceptance, plots=_plots(report),
                           tables=[("category", report.by_category), ("difficulty", report.by_difficulty)],
                           examples=examples)


def write_html(report: RunReport, out: Path | str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return out


__all__ = ["RunReport", "ReportError", "build_report", "print_summary", "render_trajectory", "render_html",
           "write_html"]
