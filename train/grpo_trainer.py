"""`synth train grpo`: TRL's GRPOTrainer with multi-turn rollouts through the project's own agent loop.

TRL 1.16 interface used: `GRPOTrainer(rollout_func=…)`. For every rollout the rollout function
1. unpacks the prompt's workspace archive into a fresh directory and opens a sandbox session on those files;
2. runs `synth.agent.run_agent` with the policy being trained as the ChatModel (deepanalyze family: Execute
   output is fed back inline, so the episode is ONE growing assistant stream, as upstream trained it);
3. scores the finished episode while the sandbox is still open (train.rewards: format, accuracy, checklist
   over the real sandbox state, code success, turns, report judge);
4. returns the episode as token ids — the prompt, then the assistant stream — with `env_mask` 0 on every
   `<Execute>…</Execute>` token, which TRL multiplies into the loss mask (train.masking builds both, exactly
   like SFT labels).
The rollout's own token ids are re-derived from the episode text (the agent loop works in text); old log-probs
are then recomputed by the trainer on those ids, so the policy ratio stays consistent.

Generation runs with transformers (`model.generate`, CPU or GPU). With `use_vllm: true` TRL's vLLM engine
(colocate or server) generates each turn instead, with `</Code>` as a stop string (single-process; not
exercised in the tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synth.llm.base import Completion, Usage
from train.grpo_config import GRPORunConfig, load_grpo_config

log = logging.getLogger(__name__)


@dataclass
class GRPOResult:
    output_dir: str
    steps: int
    rewards: list[float] = field(default_factory=list)  # every rollout's total reward, in order
    episodes: int = 0
    model_tokens: int = 0  # tokens the policy generated in rollouts
    train_tokens: int = 0  # prompt + completion tokens the trainer processed
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds > 0 else 0.0


class PolicyChatModel:
    """The model being trained, as a `synth.llm` ChatModel for the agent loop (deepanalyze family)."""

    family = "deepanalyze"

    def __init__(self, trainer: Any, tokenizer: Any, *, use_vllm: bool = False) -> None:
        self.trainer = trainer
        self.tokenizer = tokenizer
        self.use_vllm = use_vllm
        self.name = "policy"
        self.generated_tokens = 0

    async def chat(self, messages, *, stop=None, max_tokens=None, temperature=None, response_format=None):
        from synth.llm._util import cut_at_stop

        text = self.tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True,
                                                  tokenize=False)
        prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.use_vllm:
            new_ids = self._generate_vllm(prompt_ids)
        else:
            new_ids = self._generate_hf(prompt_ids, list(stop or []), int(max_tokens or 1024), temperature)
        self.generated_tokens += len(new_ids)
        hidden = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        raw = self.tokenizer.decode([t for t in new_ids if t not in hidden], skip_special_tokens=False)
        reply, cut = cut_at_stop(raw, stop)
        ended = bool(new_ids) and new_ids[-1] == self.tokenizer.eos_token_id
        finish = "stop" if cut or ended else "length"
        return Completion(text=reply, usage=Usage(len(prompt_ids), len(new_ids)), finish_reason=finish,
                          model=self.name)

    def _generate_hf(self, prompt_ids: list[int], stop: list[str], max_tokens: int, temperature) -> list[int]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        device = next(model.parameters()).device
        input_ids = torch.tensor([prompt_ids], device=device)
        tokenizer, start = self.tokenizer, len(prompt_ids)
        window = max((len(s) for s in stop), default=0) + 8

        class _Stop(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                tail = tokenizer.decode(ids[0, max(start, ids.shape[1] - window):], skip_special_tokens=False)
                return torch.tensor([any(s in tail for s in stop)], dtype=torch.bool, device=ids.device)

        sample = temperature is None or temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": sample,
                                  "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        kwargs.update(temperature=float(temperature if temperature is not None else 1.0), top_p=1.0, top_k=0) \
            if sample else kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Stop()])
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        finally:
            model.train(was_training)
        return [int(t) for t in out[0, start:]]

    def _generate_vllm(self, prompt_ids: list[int]) -> list[int]:
        _, completion_ids, _, _ = self.trainer.vllm_generation.generate([prompt_ids], None, 1)
        return list(completion_ids[0])

    async def aclose(self) -> None:
        return None


class _Rollouts:
    """The `rollout_func` handed to GRPOTrainer; also keeps what the result reports."""

    def __init__(self, cfg: GRPORunConfig, tokenizer: Any, judge_model: Any, workdir: Path) -> None:
        from synth.sandbox import get_sandbox

        self.cfg = cfg
        self.tokenizer = tokenizer
        self.judge_model = judge_model
        self.workdir = workdir
        self.sandbox = get_sandbox(cfg.sandbox)
        self.loop = asyncio.new_event_loop()  # one loop for the whole run: async clients (judge) stay bound to it
        self.rewards: list[float] = []
        self.breakdowns: list[dict[str, Any]] = []
        self.policy: PolicyChatModel | None = None

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        from train.masking import build_example

        rows = [json.loads(x["ds_row"]) for x in getattr(trainer, "_ds_inputs", [])]
        if len(rows) != len(prompts):
            raise RuntimeError(f"rollout got {len(prompts)} prompts but {len(rows)} dataset rows")
        if self.policy is None:
            self.policy = PolicyChatModel(trainer, self.tokenizer, use_vllm=self.cfg.use_vllm)
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": [],
                                     "ds_reward": [], "ds_breakdown": []}
        for row in rows:
            trajectory, breakdown = self.loop.run_until_complete(self._episode(row))
            messages = [{"role": "user", "content": trajectory.prompt},
                        {"role": "assistant", "content": trajectory.assistant_text()}]
            example = build_example(self.tokenizer, messages, closed=trajectory.answer is not None,
                                    where=f"episode of {row.get('id') or 'prompt'}")
            completion, mask = example.completion_ids, example.completion_mask
            completion, mask = completion[: self.cfg.max_completion_length], mask[: self.cfg.max_completion_length]
            if not completion:  # the episode produced nothing: one untrained token keeps shapes valid
                completion, mask = [self.tokenizer.eos_token_id], [0]
            out["prompt_ids"].append(example.input_ids[: example.prompt_length])
            out["completion_ids"].append(completion)
            out["env_mask"].append(mask)
            out["ds_reward"].append(breakdown.total)
            out["ds_breakdown"].append(json.dumps(breakdown.to_dict()))
            self.rewards.append(breakdown.total)
            self.breakdowns.append(breakdown.to_dict())
        return out

    async def _episode(self, row: dict[str, Any]):
        from synth.agent import AgentConfig, run_agent
        from synth.checklist import RuleContext
        from synth.sources.ref import source_refs
        from synth.sandbox.base import Limits
        from train.rewards import score_episode

        spec = row["reward_spec"]
        folder = Path(tempfile.mkdtemp(prefix="episode-", dir=self.workdir))
        try:
            files = _unpack(row.get("workspace"), folder / "files")
            limits = Limits(timeout_s=self.cfg.cell_timeout_s)
            max_rounds = self.cfg.max_turns or int(row.get("max_turns") or 30)
            agent_cfg = AgentConfig(max_rounds=max_rounds, cell_timeout_s=self.cfg.cell_timeout_s,
                                    max_tokens_per_turn=self.cfg.max_tokens_per_turn,
                                    temperature=self.cfg.temperature)
            with self.sandbox.open(files, mode=self.cfg.mode, limits=limits) as session:  # type: ignore[arg-type]
                initial = session.snapshot()
                trajectory = await run_agent(self.policy, session, _instruction(row["prompt"]), config=agent_cfg)
                ctx = RuleContext(trajectory=trajectory, workspace=Path(session.workspace), state=session.snapshot(),
                                  initial_state=initial, sources=source_refs(files),
                                  reference=spec.get("ground_truth"), sandbox=self.sandbox, limits=limits)
                breakdown = await score_episode(trajectory, spec, ctx=ctx, weights=self.cfg.reward_weights(),
                                                judge_model=self.judge_model,
                                                matcher_chain=[c.strip() for c in self.cfg.matcher_chain.split(",")])
            return trajectory, breakdown
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        if self.judge_model is not None:
            self.loop.run_until_complete(self.judge_model.aclose())
        self.loop.close()


def _unpack(archive: str | None, target: Path) -> list[Path]:
    """Extract a workspace archive (the rl export's tar.gz) and return its top-level entries."""
    target.mkdir(parents=True, exist_ok=True)
    if not archive:
        return []
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, .. and device files
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"workspace archive {archive}: cannot unpack ({exc})") from None
    return sorted(target.iterdir())


def _instruction(prompt: list[dict[str, str]]) -> str:
    """The task text of a row's last user message."""
    from synth.protocol import instruction_of

    return instruction_of(next((m["content"] for m in reversed(prompt) if m["role"] == "user"), ""))


def ds_synth_reward(completions: list[Any], ds_reward: list[float], ds_breakdown: list[str] | None = None,
                    log_metric: Any = None, **kwargs: Any) -> list[float]:
    """The reward function TRL calls: the totals computed during the rollout (while the sandbox was open);
    the terms are logged as metrics (reward/accuracy, reward/checklist, …)."""
    if log_metric is not None and ds_breakdown:
        parts = [json.loads(b) for b in ds_breakdown]
        for key in ("accuracy", "checklist", "interaction", "code_success", "turns", "report"):
            values = [p[key] for p in parts if p.get(key) is not None]
            if values:
                log_metric(f"reward/{key}", sum(values) / len(values))
        log_metric("reward/well_formed", sum(1.0 for p in parts if p["well_formed"]) / len(parts))
    return [float(r) for r in ds_reward]


def run_grpo(data: str | Path, model: str | Path, out: str | Path,
             config: GRPORunConfig | Path | str | dict | None = None, *, judge_model: Any = None) -> GRPOResult:
    """GRPO on the prompts of an rl export, starting from the model spec `model` (train.models: embedded,
    embedded:0.5b, a folder or a Hub id); the trained model is saved in `out`.

    `judge_model` (a ChatModel) overrides `config.judge_model` (a spec) for openresearch report scoring."""
    import os

    from train.errors import require_train_extra

    require_train_extra()
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from train.data import load_rl_rows
    from train.models import resolve_base_model
    from train.sft_trainer import load_model_and_tokenizer

    cfg = config if isinstance(config, GRPORunConfig) else load_grpo_config(config)
    out = Path(out)
    rows = load_rl_rows(data)
    model = resolve_base_model(model).path
    if judge_model is None and cfg.judge_model:
        from synth.llm import load_model

        judge_model = load_model(cfg.judge_model)
    if any(r["reward_spec"]["method"] == "openresearch" for r in rows) and judge_model is None:
        log.warning("openresearch prompts without a judge model: their report term is 0 (set judge_model)")
    lm, tokenizer = load_model_and_tokenizer(model, chat_template=cfg.chat_template)
    tokenizer.padding_side = "left"
    dataset = Dataset.from_list([{"prompt": r["prompt"], "ds_row": json.dumps(r)} for r in rows])
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    extra: dict[str, Any] = {}
    if cfg.loss_type:
        extra["loss_type"] = cfg.loss_type
    if cfg.gradient_checkpointing:
        extra["gradient_checkpointing"] = True
    if cfg.use_vllm:
        extra.update(use_vllm=True, vllm_mode=cfg.vllm_mode, vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                     generation_kwargs={"stop": ["</Code>"], "include_stop_str_in_output": True,
                                        "max_tokens": cfg.max_tokens_per_turn})
        if cfg.vllm_server_base_url:
            extra["vllm_server_base_url"] = cfg.vllm_server_base_url
    args = GRPOConfig(
        output_dir=str(out), learning_rate=cfg.learning_rate, num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, beta=cfg.beta, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, logging_steps=cfg.logging_steps, save_strategy="no", report_to=cfg.report_to,
        seed=cfg.seed, bf16=bf16,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, **extra,
    )
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="grpo-rollouts-"))
    rollouts = _Rollouts(cfg, tokenizer, judge_model, workdir)

    class AgentGRPOTrainer(GRPOTrainer):
        # rollout_func only receives prompts; the rows (workspace, reward spec) ride along on the trainer.
        def _generate_and_score_completions(self, inputs):
            self._ds_inputs = inputs
            return super()._generate_and_score_completions(inputs)

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = AgentGRPOTrainer(model=lm, reward_funcs=[ds_synth_reward], args=args, train_dataset=dataset,
                               processing_class=tokenizer, rollout_func=rollouts)
    started = time.monotonic()
    try:
        output = trainer.train()
    finally:
        rollouts.close()
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - started
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(out)
    result = GRPOResult(str(out), int(output.global_step), list(rollouts.rewards), len(rollouts.rewards),
                        rollouts.policy.generated_tokens if rollouts.policy else 0,
                        int(trainer.state.num_input_tokens_seen or 0), seconds)
    if any(not math.isfinite(r) for r in result.rewards):
        log.warning("non-finite rewards in the run")
    summary = asdict(result) | {"tokens_per_second": result.tokens_per_second, "config": asdict(cfg),
                                "breakdowns": rollouts.breakdowns}
    (out / "grpo_result.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return result


__all__ = ["run_grpo", "GRPOResult", "PolicyChatModel", "ds_synth_reward"]
