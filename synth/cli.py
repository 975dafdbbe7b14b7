"""The `synth` command line. Each command is a thin shell over the engine; heavy imports happen inside."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="synth",
    help="Synthesize agentic data-science training data from real sources, train on it, serve the agent.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
sources_app = typer.Typer(help="Discover and profile data sources.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Run code in the sandbox the agents use.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(sandbox_app, name="sandbox")
train_app = typer.Typer(help="Train on synthesized data: SFT curriculum, then GRPO in the sandbox.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("sft")
def train_sft(
    data: List[str] = typer.Option(..., "--data", help="Run dir, export file, `datasets` dir or Hub id (repeatable)."),
    model: str = typer.Option(..., "--model", help="Base model: a local folder or Hub id."),
    out: Path = typer.Option(..., "--out", help="Output folder; the final model is saved here."),
    config: Optional[Path] = typer.Option(None, "--config", help="Curriculum YAML (default: upstream recipe)."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (merged after each stage)."),
) -> None:
    """SFT curriculum: stage 1 on reasoning records, stage 2 on interaction records (Execute spans masked)."""
    from train.sft_trainer import sft_command

    raise typer.Exit(sft_command(data, model, out, config, lora))


@train_app.command("grpo")
def train_grpo(
    data: str = typer.Option(..., "--data", help="rl export (.parquet), published dataset dir or Hub id."),
    model: str = typer.Option(..., "--model", help="Starting model (usually the SFT output folder)."),
    out: Path = typer.Option(..., "--out", help="Output folder for the trained model."),
    config: Optional[Path] = typer.Option(None, "--config", help="GRPO YAML (train.grpo_config fields)."),
) -> None:
    """GRPO with multi-turn rollouts through the agent loop in the sandbox; rewards from train.rewards."""
    from train.grpo_trainer import grpo_command

    raise typer.Exit(grpo_command(data, model, out, config))


@sources_app.command("profile")
def sources_profile(
    directory: Path = typer.Argument(..., help="Directory (or single file) of data sources."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ignore the profile cache."),
) -> None:
    """Profile every data source under DIRECTORY into DataCards."""
    from synth.sources.commands import profile_command

    raise typer.Exit(profile_command(directory, as_json=as_json, use_cache=not no_cache))


@app.command("demo-sources")
def demo_sources(
    directory: Path = typer.Argument(..., help="Where to write the example sources (created if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite demo files that already exist."),
) -> None:
    """Write a small multi-format example source folder built from data bundled with scikit-learn."""
    from synth.sources.demo import write_demo_sources

    try:
        written = write_demo_sources(directory, force=force)
    except (FileExistsError, NotADirectoryError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    for path in written:
        typer.echo(str(path))


@sandbox_app.command("exec")
def sandbox_exec(
    files: List[Path] = typer.Argument(..., help="Python files, each run as one cell, in order."),
    workspace: Path = typer.Option(..., "--workspace", help="Directory copied into a fresh sandbox workspace."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    timeout: float = typer.Option(60.0, "--timeout", help="Wall-clock seconds per cell."),
    backend: str = typer.Option("local", "--backend", help="local | docker"),
) -> None:
    """Run FILES as cells in one sandbox session; print one JSON line per cell."""
    from synth.sandbox.commands import exec_command

    raise typer.Exit(exec_command(files, workspace=workspace, mode=mode, timeout=timeout, backend=backend))


@app.command("generate")
def generate(
    sources: Optional[Path] = typer.Option(None, "--sources", help="Directory (or file) of data sources; never written to."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/run-<time>)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Episodes to run (default: sources × categories × difficulties)."),
    categories: Optional[List[str]] = typer.Option(None, "--categories", help="Task categories (repeat or comma-separate)."),
    difficulties: Optional[List[str]] = typer.Option(None, "--difficulties", help="easy, medium, hard (repeat or comma-separate)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec for every role (default: embedded)."),
    questioner_model: Optional[str] = typer.Option(None, "--questioner-model", help="Model spec for the questioner."),
    solver_model: Optional[str] = typer.Option(None, "--solver-model", help="Model spec for the solver."),
    inspector_model: Optional[str] = typer.Option(None, "--inspector-model", help="Model spec for the inspector."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Episodes run at once."),
    mode: Optional[str] = typer.Option(None, "--mode", help="script | session"),
    max_revisions: Optional[int] = typer.Option(None, "--max-revisions", help="Solver revisions after inspector feedback."),
    max_rounds: Optional[int] = typer.Option(None, "--max-rounds", help="Agent rounds per solve attempt."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the episode plan."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (e.g. a run's config.yaml); options given here win."),
    roles: Optional[Path] = typer.Option(None, "--roles", help="Directory of role YAML overriding the built-ins."),
    checklists: Optional[Path] = typer.Option(None, "--checklists", help="Directory of checklist YAML overriding the built-ins."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Sandbox backend: local | docker"),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where episodes run: local | ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (with --executor ray)."),
) -> None:
    """Synthesize interaction trajectories from the sources: propose → solve → inspect → accept/revise/reject."""
    from synth.run import generate_command

    options = dict(
        sources=sources, out=out, limit=limit, categories=_split_list(categories),
        difficulties=_split_list(difficulties), model=model, questioner_model=questioner_model,
        solver_model=solver_model, inspector_model=inspector_model, base_url=base_url, concurrency=concurrency,
        mode=mode, max_revisions=max_revisions, max_rounds=max_rounds, resume=resume or None, seed=seed,
        roles=roles, checklists=checklists, backend=backend, executor=executor, ray_address=ray_address,
    )
    raise typer.Exit(generate_command(options, config_path=config))


@app.command("refine")
def refine(
    input: Optional[Path] = typer.Option(None, "--input", help="Instruction data (file or folder); only read."),
    format: Optional[str] = typer.Option(None, "--format", help="auto | wikitq | tablebench | jsonl | json | csv | tsv | parquet | hf"),
    question_field: Optional[str] = typer.Option(None, "--question-field", help="Field holding the question."),
    answer_field: Optional[str] = typer.Option(None, "--answer-field", help="Field holding the reference answer."),
    table_field: Optional[str] = typer.Option(None, "--table-field", help="Field holding the table (object, rows, path or text)."),
    context_field: Optional[str] = typer.Option(None, "--context-field", help="Field holding extra text context."),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Field holding the item id (default: id, else a hash)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/refine-<time>)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Items to process (the first N)."),
    model: Optional[str] = typer.Option(None, "--model", help="Teacher model spec (default: embedded)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model spec of the LLM judge (last-resort matcher)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Items processed at once."),
    keywords_per_trace: Optional[int] = typer.Option(None, "--keywords-per-trace", help="Keywords sampled per item (K)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of keyword sampling."),
    matchers: Optional[str] = typer.Option(None, "--matchers", help="Answer matcher chain, e.g. exact,wikitq,numeric,contains,judge."),
    max_distill_attempts: Optional[int] = typer.Option(None, "--max-distill-attempts", help="Distillations per item before dropping it."),
    max_refine_attempts: Optional[int] = typer.Option(None, "--max-refine-attempts", help="Refinements per item before keeping only the distilled trace."),
    roles: Optional[Path] = typer.Option(None, "--roles", help="Directory of role YAML overriding the built-ins."),
    checklists: Optional[Path] = typer.Option(None, "--checklists", help="Directory with a keywords.yaml overriding the built-in vocabulary."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where items run: local | ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (with --executor ray)."),
) -> None:
    """Synthesize reasoning trajectories: distill → verify → reformulate → keyword-guided refine → verify."""
    from synth.graphs.reasoning import refine_command

    options = dict(
        input=input, format=format, question_field=question_field, answer_field=answer_field,
        table_field=table_field, context_field=context_field, id_field=id_field, out=out, limit=limit, model=model,
        judge_model=judge_model, base_url=base_url, concurrency=concurrency, keywords_per_trace=keywords_per_trace,
        seed=seed, matchers=matchers, max_distill_attempts=max_distill_attempts,
        max_refine_attempts=max_refine_attempts, roles=roles, checklists=checklists, resume=resume or None,
        executor=executor, ray_address=ray_address,
    )
    raise typer.Exit(refine_command(options))


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@app.command("analyze")
def analyze(
    question: str = typer.Argument(..., help="What to find out, in plain words."),
    data: List[Path] = typer.Option([], "--data", help="Data file or directory (repeatable); copied into the workspace."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    max_rounds: int = typer.Option(30, "--max-rounds", min=1, help="Model turns at most."),
    timeout: float = typer.Option(60.0, "--timeout", help="Wall-clock seconds per code cell."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write report.md, trajectory.json and created files here."),
    as_json: bool = typer.Option(False, "--json", help="Print {answer, turns, stop_reason, trajectory, usage}."),
    backend: str = typer.Option("local", "--backend", help="Sandbox backend: local | docker"),
) -> None:
    """Answer QUESTION about the --data files with the five-action agent in a fresh sandbox."""
    from synth.agent import analyze_command

    raise typer.Exit(
        analyze_command(question, list(data), model_spec=model, mode=mode, max_rounds=max_rounds,
                        cell_timeout_s=timeout, out=out, as_json=as_json, backend=backend)
    )


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8200, "--port", help="TCP port."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs (e.g. vLLM)."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    max_rounds: int = typer.Option(30, "--max-rounds", help="Model turns per request at most."),
    cell_timeout: float = typer.Option(60.0, "--cell-timeout", help="Wall-clock seconds per code cell."),
    workspace_root: Optional[Path] = typer.Option(None, "--workspace-root", help="Where files and thread workspaces live (default: a temp dir)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="DS_SYNTH_SERVE_API_KEY", help="Require `Authorization: Bearer KEY` on /v1."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", help="Largest request body / upload, in MB."),
    max_concurrent: int = typer.Option(4, "--max-concurrent", help="Agent episodes running at once."),
    max_queued: int = typer.Option(64, "--max-queued", help="Episodes waiting for a slot before 429."),
    thread_ttl: float = typer.Option(3600.0, "--thread-ttl", help="Idle seconds before a thread's workspace is removed."),
) -> None:
    """Serve the agent: OpenAI-compatible API (/v1/chat/completions, /v1/files) and a web page at /."""
    from serve import serve_command

    raise typer.Exit(serve_command(dict(
        host=host, port=port, model=model, base_url=base_url, mode=mode, max_rounds=max_rounds,
        cell_timeout_s=cell_timeout, workspace_root=workspace_root, api_key=api_key, max_upload_mb=max_upload_mb,
        max_concurrent=max_concurrent, max_queued=max_queued, thread_ttl_s=thread_ttl,
    )))


@app.command("export")
def export_cmd(
    runs: List[Path] = typer.Argument(..., help="Run directories (or records .jsonl files, e.g. from `synth filter`)."),
    format: str = typer.Option(..., "--format", help="sft | swift | rl | raw"),
    out: Path = typer.Option(..., "--out", help="Output file: .parquet, .jsonl or .json (rl: .parquet)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only interaction or reasoning records."),
    sources: Optional[Path] = typer.Option(None, "--sources", help="Where the run's sources are now (rl; default: the run's config)."),
) -> None:
    """Export run records for SFT (TRL / ms-swift messages), RL (prompts + workspace archives) or as raw records."""
    from synth.dataset.export import export_command

    raise typer.Exit(export_command(runs, format, out, kind=kind, sources_root=sources))


@app.command("filter")
def filter_cmd(
    runs: List[Path] = typer.Argument(..., help="Run directories (or records .jsonl files)."),
    out: Path = typer.Option(..., "--out", help="Filtered records (.jsonl); the report goes to <out>.report.json."),
    dedup: bool = typer.Option(False, "--dedup", help="Remove exact and near-duplicate instructions."),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard similarity counted as near-duplicate."),
    decontaminate: Optional[List[Path]] = typer.Option(None, "--decontaminate", help="Benchmark question file (JSONL/TSV/CSV/JSON); repeatable."),
    ngram: int = typer.Option(8, "--ngram", help="Word n-gram size for decontamination."),
    category: Optional[List[str]] = typer.Option(None, "--category", help="Keep only these categories (repeat or comma-separate)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Keep only interaction or reasoning records."),
    min_turns: Optional[int] = typer.Option(None, "--min-turns", help="Fewest model turns."),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help="Most model turns."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Most (estimated) tokens per conversation."),
    verdict: Optional[str] = typer.Option(None, "--verdict", help="accept: keep only records whose verdict accepted them."),
) -> None:
    """Filter records: selection, dedup, decontamination; prints and saves what was removed and why."""
    from synth.dataset.filters import filter_command

    options = dict(dedup=dedup, near_dup_threshold=near_dup_threshold, decontaminate=decontaminate or None,
                   ngram=ngram, categories=_split_list(category), kind=kind, min_turns=min_turns,
                   max_turns=max_turns, max_tokens=max_tokens, verdict=verdict)
    raise typer.Exit(filter_command(runs, out, options))


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="Run directory."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report here."),
) -> None:
    """Summarise a run: acceptance, failed checklist items, revisions, tokens, cost, histograms, examples."""
    from synth.dataset.report import report_command

    raise typer.Exit(report_command(run, html=html))


@app.command("publish")
def publish_cmd(
    runs: List[Path] = typer.Argument(..., help="Run directories (generate and/or refine runs)."),
    to: Optional[Path] = typer.Option(None, "--to", help="Write the dataset (data/<config>/*.parquet + README.md) here."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Push to this Hub dataset repo (token from HF_TOKEN)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo as private."),
    dedup: bool = typer.Option(False, "--dedup", help="Remove exact and near-duplicate instructions first."),
    decontaminate: Optional[List[Path]] = typer.Option(None, "--decontaminate", help="Benchmark question file; repeatable."),
    license: str = typer.Option("apache-2.0", "--license", help="License for the card (an existing card's wins)."),
) -> None:
    """Publish runs as a Hugging Face dataset with configs interaction, reasoning and rl, and a dataset card."""
    from synth.dataset.publish import publish_command

    raise typer.Exit(publish_command(runs, to=to, repo_id=repo_id, private=private, dedup=dedup,
                                     decontaminate=decontaminate or [], license=license))


@app.command("eval")
def eval_cmd(
    bench: str = typer.Option(..., "--bench", help="infiagent | wikitq | tablebench | ds1000"),
    data: Path = typer.Option(..., "--data", help="The benchmark's file or folder; only read."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate the first N items."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Items run at once (default 2)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder; rerun with the same --out to resume."),
    mode: Optional[str] = typer.Option(None, "--mode", help="script | session"),
    max_rounds: Optional[int] = typer.Option(None, "--max-rounds", help="Agent rounds per item (default 20)."),
    cell_timeout: Optional[float] = typer.Option(None, "--cell-timeout", help="Wall-clock seconds per code cell."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Sandbox backend: local | docker"),
) -> None:
    """Run the agent on benchmark items and score them with the benchmark's official rules."""
    from train.eval.runner import eval_command

    raise typer.Exit(eval_command(dict(
        bench=bench, data=data, model=model, base_url=base_url, limit=limit, concurrency=concurrency, out=out,
        mode=mode, max_rounds=max_rounds, cell_timeout_s=cell_timeout, backend=backend,
    )))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
