"""The dataset card (README.md with YAML metadata) for a published ds-synth dataset.

Merging with an existing card keeps what its owner wrote: their metadata values win (tags are united), configs we
do not produce are kept, and body text outside the generated block (between the ds-synth markers) is kept.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import yaml

BEGIN = "<!-- ds-synth:begin (generated; edits inside are replaced on the next publish) -->"
END = "<!-- ds-synth:end -->"
DEFAULT_TAGS = ["synthetic", "agent", "data-science", "tool-use", "ds-synth", "deepanalyze"]
# Values the data determines: always ours, whatever the existing card said.
_DERIVED = ("size_categories",)


def size_category(n: int) -> str:
    """The Hub's size bucket for n rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


def card_metadata(config_rows: Mapping[str, int], *, license: str = "apache-2.0") -> dict[str, Any]:
    return {
        "license": license,
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering", "table-question-answering"],
        "tags": list(DEFAULT_TAGS),
        "size_categories": [size_category(sum(config_rows.values()))],
        "configs": [{"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}/*.parquet"}]}
                    for name in config_rows],
    }


def card_body(config_rows: Mapping[str, int], *, stats: Mapping[str, Any], run_configs: Sequence[tuple[str, str]],
              filter_summary: str = "") -> str:
    lines = [BEGIN, "", "# ds-synth dataset", "",
             "Agentic data-science training data in the DataScience-Instruct format: one user message "
             "(`# Instruction` / `# Data`) and one assistant message using the actions `<Analyze>`, `<Understand>`, "
             "`<Code>`, `<Execute>` and `<Answer>`. Made with ds-synth "
             "(questioner → solver → inspector for interaction trajectories; distill → verify → keyword-guided "
             "refinement for reasoning trajectories).", "",
             "## Configs", "", "| config | rows | what |", "|---|---:|---|"]
    what = {"interaction": "multi-turn trajectories with real code execution (`<Execute>` spans are harness "
                           "output: mask them from the loss)",
            "reasoning": "reasoning traces over tables (distilled and keyword-refined variants)",
            "rl": "GRPO prompts: `prompt`, `reward_spec` (method, JSON ground truth, JSON checklist), `workspace` "
                  "archive path (relative to the parquet folder), `max_turns`"}
    for name, rows in config_rows.items():
        lines.append(f"| {name} | {rows} | {what.get(name, '')} |")
    lines += ["", "```python", "from datasets import load_dataset",
              f"ds = load_dataset(REPO_OR_DIR, {next(iter(config_rows), 'interaction')!r}, split='train')", "```",
              "", "## How it was made", ""]
    if not run_configs:
        lines.append("No run configuration was found.")
    for where, config_yaml in run_configs:
        lines += [f"Resolved configuration of run `{where}`:", "", "```yaml", config_yaml.rstrip(), "```", ""]
    if filter_summary:
        lines += ["Filtering before publishing:", "", "```", filter_summary.rstrip(), "```", ""]
    lines += ["## Statistics", ""]
    for key, value in stats.items():
        lines.append(f"- **{key}**: {_inline(value)}")
    lines += ["", "## Limitations", "",
              "- Tasks, solutions and verdicts are machine-generated; the inspector's checklist catches many but "
              "not all errors, and LLM-judged items inherit the judge model's mistakes.",
              "- Trajectories reflect the sources they were grounded in (their domains, languages and biases) and "
              "the solver model's style; they are not a sample of real analyst work.",
              "- Execute outputs are real but were produced in one sandbox environment (library versions, "
              "time limits); replaying elsewhere may differ.",
              "- Check each source's license before redistributing the workspaces of the rl config.", "", END]
    return "\n".join(lines) + "\n"


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) or "-"
    return str(value)


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(metadata, body) of a README.md with optional `---` YAML front matter."""
    if text.startswith("---"):
        parts = text.split("\n---", 1)
        if len(parts) == 2:
            head = parts[0][3:]
            body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
            try:
                meta = yaml.safe_load(head) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"existing dataset card: metadata is not valid YAML ({' '.join(str(exc).split())[:120]})")
            if not isinstance(meta, dict):
                raise ValueError("existing dataset card: metadata is not a mapping")
            return meta, body
    return {}, text


def merge_metadata(ours: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    merged = dict(ours)
    for key, value in existing.items():
        if key == "tags" and isinstance(value, list):
            merged["tags"] = list(dict.fromkeys([*value, *ours.get("tags", [])]))
        elif key == "configs" and isinstance(value, list):
            ours_names = {c["config_name"] for c in ours.get("configs", [])}
            kept = [c for c in value if isinstance(c, dict) and c.get("config_name") not in ours_names]
            merged["configs"] = ours.get("configs", []) + kept
        elif key not in _DERIVED:
            merged[key] = value
    return merged


def build_card(config_rows: Mapping[str, int], *, stats: Mapping[str, Any], run_configs: Sequence[tuple[str, str]],
               existing: str | None = None, license: str = "apache-2.0", filter_summary: str = "") -> str:
    """The README.md text; `existing` (a previous card) is merged so its metadata and own text survive."""
    meta = card_metadata(config_rows, license=license)
    body = card_body(config_rows, stats=stats, run_configs=run_configs, filter_summary=filter_summary)
    if existing:
        old_meta, old_body = split_card(existing)
        meta = merge_metadata(meta, old_meta)
        if BEGIN in old_body and END in old_body:
            before, rest = old_body.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            body = before + body.rstrip("\n") + after
        elif old_body.strip():
            body = old_body.rstrip("\n") + "\n\n" + body
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{body.lstrip(chr(10))}"


__all__ = ["build_card", "card_metadata", "card_body", "merge_metadata", "split_card", "size_category"]
