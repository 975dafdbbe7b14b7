"""The five-action agent loop (DESIGN §3, §6), shared by the solver, serve, GRPO rollouts and eval.

One round = one model call that ends at `</Code>` (stop string) or with an `<Answer>`; its code runs for real in
the sandbox and the output goes back to the model. How it goes back depends on the model family:
- `instruct`: system prompt + one few-shot example from roles/solver.yaml; each Execute is its own user message
  asking for the next step (measured: continuing one growing assistant message makes small models loop forever).
- `deepanalyze`: no system prompt; each Execute is a role "execute" message the checkpoint's template renders inline.
Either way the saved Trajectory is turn by turn and `Trajectory.assistant_text()` assembles ONE assistant message.

Repairs the loop makes to a reply (each recorded in `Turn.notes`):
- a `<Code>` left open by the stop string gets exactly one `</Code>` (some engines return the stop string, some don't);
- an `<Execute>` the model wrote itself is cut off with everything after it (its output was invented); the code
  before it runs for real;
- anything after the first `</Code>` is cut: it was written without seeing the output. So an `<Answer>` in the same
  reply as a `<Code>` does NOT end the episode: the code runs and the model answers next turn, having seen it.
  (An `<Answer>` before any `<Code>` ends the episode; text after `</Answer>` is dropped.)
- fenced code outside `<Code>` is treated as the turn's Code; other stray text is wrapped as `<Analyze>`;
- a reply with no tags at all is wrapped as `<Analyze>` or re-prompted, per `AgentConfig.on_no_tags`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from synth import matchers, protocol
from synth.llm.base import ChatModel, Message
from synth.sandbox.base import SandboxSession
from synth.trajectory import Trajectory, Turn, code_key

STOP = ["</Code>"]
EventCallback = Callable[[str, dict[str, Any]], Any]

_TRUNCATED = "\n[... output truncated to fit the context ...]\n"
_REPEAT_NOTE = "You already ran exactly this code. Do not repeat it: use the output above, change the code, or answer."
_NO_TAGS_REPROMPT = (
    "Your reply used no tags. Write <Analyze>…</Analyze> and then a <Code> block with ```python code, "
    "or give the final <Answer>…</Answer>."
)
_ERROR_NOTE = (
    "The code failed. Read the error above, fix the code (use only column names you saw printed) and run it "
    "again in a new <Code> block. Do not answer before the code works."
)
_ANSWER_AFTER_ERROR = (
    "Your last code failed, so that answer is not supported by any output. First fix the code in a new <Code> "
    "block (check the table and column names), run it, then answer from its output."
)
_SILENT_NOTE = (
    "The code printed nothing. If you need its result, print it (e.g. print(df) or print(\"RESULT:\", value)) in "
    "the next <Code> block; answer only from printed output."
)
_ANSWER_AFTER_SILENCE = (
    "Your last code printed nothing, so that answer is not supported by any output. Print the result in a new "
    "<Code> block (e.g. print(df) or print(\"RESULT:\", value)), then answer from what it shows."
)
_ANSWER_BEFORE_STEPS = (
    "This task needs at least {n} separate steps, one <Code> block each, and {ran} ran so far, so that answer is "
    "not accepted yet. Continue with the next step in a new <Code> block and print its result; answer after the "
    "last step."
)
_STEPS_LEFT = "This task needs at least {n} separate steps (one <Code> block each); {ran} ran so far."
_CONTINUE = "Continue: write the next <Code> block, or give the final <Answer>."
_EMPTY_REPROMPT = "Your reply was empty. Continue with the next step: a <Code> block or the final <Answer>."


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(30, ge=1, description="Model calls at most (the round cap).")
    cell_timeout_s: float = Field(60.0, gt=0, description="Wall-clock seconds per code cell.")
    max_tokens_per_turn: int = Field(1024, ge=16)
    token_budget: int | None = Field(None, ge=1, description="Total completion tokens of the episode; None = no cap.")
    temperature: float | None = Field(None, ge=0, description="None = the solver role's temperature.")
    on_no_tags: Literal["wrap", "reprompt"] = "wrap"
    max_context_chars: int = Field(48_000, ge=2_000, description="Old Execute outputs are truncated past this.")
    system_prompt: str | None = Field(None, description="Replaces the solver role's system prompt (instruct family).")
    feedback: str | None = Field(None, description="Extra instructions for this attempt, e.g. inspector feedback.")
    max_empty_replies: int = Field(2, ge=0, description="Empty replies retried before stopping with empty_reply.")
    max_repeated_code: int = Field(3, ge=2, description="Same code this many times in a row stops the episode.")
    roles_dir: Path | None = Field(None, description="User roles directory overriding the built-in solver role.")
    refuse_unsupported_answer: int = Field(
        1, ge=0,
        description="Times per episode an <Answer> given right after a failed cell, or after a cell that printed "
        "nothing, is refused and the model asked to fix or print first (small models answer from an error "
        "message or invent the result); 0 accepts every answer.",
    )
    min_cells: int = Field(
        0, ge=0,
        description="Different code cells (Trajectory.steps) that must run before an <Answer>: a hard task's steps, "
        "the inspector's `min_cells` item; the model is reminded after each output while fewer ran. 0 = none.",
    )
    refuse_early_answer: int = Field(
        2, ge=0,
        description="Times per episode an <Answer> given before `min_cells` steps ran is refused and the model "
        "asked for the next step; after that the answer stands (and the inspector judges it).",
    )


async def run_agent(
    model: ChatModel,
    session: SandboxSession,
    instruction: str,
    *,
    files: Iterable[protocol.FileSpec] | None = None,
    config: AgentConfig | None = None,
    history: list[Message] | None = None,
    on_event: EventCallback | None = None,
) -> Trajectory:
    """Work `instruction` in `session` until an <Answer> or a stop condition; return the whole episode.

    `files` lists what the prompt's `# Data` section names: paths (relative to the workspace, or inside it) or
    `(name, size)` pairs; None lists every file in the workspace. `history` is earlier conversation placed
    before this instruction (e.g. a chat thread in serve). `on_event(kind, payload)` is called (and awaited if
    it returns an awaitable) for each action as it happens: kinds are the five tags, "note" and "stop".
    """
    cfg = config or AgentConfig()
    loop = _Loop(model, session, cfg, on_event)
    return await loop.run(instruction, files, history or [])


class _Loop:
    def __init__(self, model: ChatModel, session: SandboxSession, cfg: AgentConfig, on_event: EventCallback | None):
        self.model = model
        self.session = session
        self.cfg = cfg
        self.on_event = on_event
        self.family = getattr(model, "family", "instruct")
        self.role = None
        if self.family != "deepanalyze":
            from synth.roles import load_role

            self.role = load_role("solver", cfg.roles_dir)
        params = self.role.params if self.role else {}
        self.temperature = cfg.temperature if cfg.temperature is not None else params.get("temperature")
        self.messages: list[Message] = []
        self.execute_indices: list[int] = []  # positions in self.messages holding Execute output
        self.answer_format = ""  # the task's @name[value] fields, repeated where the model writes its answer

    async def run(self, instruction: str, files, history: list[Message]) -> Trajectory:
        started = time.monotonic()
        data_files = self._data_files(files)
        prompt = protocol.build_user_prompt(instruction, data_files, root=self.session.workspace)
        self.answer_format = answer_format(instruction)
        traj = Trajectory(prompt=prompt, mode=self.session.mode, model=getattr(self.model, "name", ""))
        self.messages = self._opening_messages(prompt, history, _database_names(data_files))

        empty_replies = 0
        rounds = 0
        repeats = 1
        refusals = 0
        early_refusals = 0
        pending_note: str | None = None
        stop_reason = "max_rounds"
        while rounds < self.cfg.max_rounds:
            rounds += 1
            self._fit_context()
            try:
                completion = await self.model.chat(
                    self.messages, stop=STOP, max_tokens=self.cfg.max_tokens_per_turn, temperature=self.temperature
                )
            except Exception as exc:  # any backend failure ends the episode with its message, never a crash
                traj.error = f"{type(exc).__name__}: {exc}"
                stop_reason = "model_error"
                break
            traj.usage = traj.usage + completion.usage
            if completion.finish_reason == "error":
                traj.error = completion.text or "the model reported an error"
                stop_reason = "model_error"
                break

            reply = completion.text or ""
            reply, echo_notes = _strip_echoed_execute(reply, traj.turns[-1].result if traj.turns else None)
            text, notes = _normalise(reply) if reply.strip() else ("", [])
            notes = echo_notes + notes
            if text is not None and not text:  # nothing usable (e.g. the reply was only an invented <Execute>)
                empty_replies += 1
                if empty_replies > self.cfg.max_empty_replies:
                    stop_reason = "empty_reply"
                    break
                if self.family != "deepanalyze":
                    self._append_user(_EMPTY_REPROMPT)
                continue

            turn_started = time.monotonic()
            if text is None:  # no tags at all, and config says re-prompt
                if self.cfg.on_no_tags == "reprompt" and self.family != "deepanalyze":
                    self.messages.append({"role": "assistant", "content": reply})
                    self._append_user(_NO_TAGS_REPROMPT)
                    await self._emit("note", {"round": rounds, "note": "reply without tags: re-prompted"})
                    continue
                text, notes = f"<Analyze>\n{reply.strip()}\n</Analyze>", ["reply without tags wrapped as <Analyze>"]
            parsed = protocol.parse(text)
            turn = Turn(text=text, usage=completion.usage, notes=notes)
            code_actions = parsed.of_kind("Code")
            if code_actions:
                turn.code = protocol.extract_code(code_actions[0].content)
                if traj.turns and traj.turns[-1].code is not None and _same_code(traj.turns[-1].code, turn.code):
                    repeats += 1
                else:
                    repeats = 1
                if repeats >= self.cfg.max_repeated_code:
                    traj.turns[-1].notes.append(f"the same code was written {repeats} times in a row: stopped")
                    stop_reason = "repeated_code"
                    await self._emit("note", {"round": rounds, "note": "repeated code: stopped"})
                    break
            unsupported = _unsupported_by(traj.turns[-1].result if traj.turns else None)
            if (
                turn.code is None
                and parsed.answer is not None
                and self.family != "deepanalyze"
                and refusals < self.cfg.refuse_unsupported_answer
                and unsupported is not None
            ):
                # Not recorded: the trajectory keeps the last cell and continues with the fix or the print.
                refusals += 1
                self.messages.append({"role": "assistant", "content": turn.text})
                self._append_user(_ANSWER_AFTER_ERROR if unsupported == "failed" else _ANSWER_AFTER_SILENCE)
                await self._emit("note", {"round": rounds, "note": f"answer after a {unsupported} cell refused"})
                continue
            ran = traj.steps()
            if (
                turn.code is None
                and parsed.answer is not None
                and self.family != "deepanalyze"
                and early_refusals < self.cfg.refuse_early_answer
                and ran < self.cfg.min_cells
            ):
                # Not recorded either: the refused answer is no step of the trajectory.
                early_refusals += 1
                self.messages.append({"role": "assistant", "content": turn.text})
                self._append_user(_ANSWER_BEFORE_STEPS.format(n=self.cfg.min_cells, ran=ran))
                note = f"answer after {ran} of {self.cfg.min_cells} steps refused"
                await self._emit("note", {"round": rounds, "note": note})
                continue
            for note in notes:
                await self._emit("note", {"round": rounds, "note": note})
            for action in parsed.actions:
                await self._emit(action.kind, {"round": rounds, "content": action.content})

            if turn.code is not None:
                turn.result = await asyncio.to_thread(self.session.run, turn.code, self.cfg.cell_timeout_s)
                output = turn.result.output()
                await self._emit("Execute", {"round": rounds, "content": output, "result": turn.result})
                pending_note = _REPEAT_NOTE if repeats > 1 else {"failed": _ERROR_NOTE, "silent": _SILENT_NOTE}.get(
                    _unsupported_by(turn.result) or "")
            turn.duration_s = time.monotonic() - turn_started
            traj.turns.append(turn)

            if turn.code is None and parsed.answer is not None:
                traj.answer = parsed.answer.strip()
                stop_reason = "answer"
                break
            if self.cfg.token_budget is not None and traj.usage.completion_tokens >= self.cfg.token_budget:
                stop_reason = "token_budget"
                break
            self._feed_back(turn, pending_note, traj.steps())
            pending_note = None

        traj.stop_reason = stop_reason  # type: ignore[assignment]
        traj.duration_s = time.monotonic() - started
        await self._emit("stop", {"stop_reason": stop_reason, "answer": traj.answer, "error": traj.error})
        return traj

    # --- messages -----------------------------------------------------------------------------------------

    def _opening_messages(self, prompt: str, history: list[Message], databases: list[str]) -> list[Message]:
        user = prompt if not self.cfg.feedback else f"{prompt}\n\n# Feedback on a previous attempt\n{self.cfg.feedback}"
        if self.family == "deepanalyze":
            return [*history, {"role": "user", "content": user}]
        assert self.role is not None
        # The role sees the mode and the database files, so it can show a database example where one helps.
        context = {"mode": self.session.mode, "databases": databases}
        system = self.cfg.system_prompt if self.cfg.system_prompt is not None else self.role.render_system(**context)
        messages: list[Message] = [{"role": "system", "content": system}] if system.strip() else []
        messages += self.role.few_shot_messages(**context)  # type: ignore[arg-type]
        return [*messages, *history, {"role": "user", "content": user}]

    def _feed_back(self, turn: Turn, note: str | None, ran: int) -> None:
        if self.family == "deepanalyze" and self.messages and self.messages[-1]["role"] == "assistant":
            # A turn without code continues the same assistant message: the model writes one message between
            # Executes, and llama.cpp refuses two assistant messages at the end of a request.
            self.messages[-1] = {"role": "assistant", "content": self.messages[-1]["content"] + turn.text}
        else:
            self.messages.append({"role": "assistant", "content": turn.text})
        if turn.result is None:
            if self.family != "deepanalyze":
                self._append_user(_CONTINUE)
            return
        output = turn.result.output()
        self.execute_indices.append(len(self.messages))
        if self.family == "deepanalyze":
            self.messages.append({"role": "execute", "content": f"\n<Execute>\n{output}\n</Execute>\n"})
        else:
            assert self.role is not None
            steps = _STEPS_LEFT.format(n=self.cfg.min_cells, ran=ran) if ran < self.cfg.min_cells else ""
            self._append_user(self.role.render_user(output=output, note=note or "", answer_format=self.answer_format,
                                                    steps=steps))

    def _append_user(self, content: str) -> None:
        self.messages.append({"role": "user", "content": content})

    def _fit_context(self) -> None:
        """Shorten the oldest Execute outputs (model-facing copy only) until the conversation fits."""
        for index in self.execute_indices:
            total = sum(len(m["content"]) for m in self.messages)
            if total <= self.cfg.max_context_chars:
                return
            content = self.messages[index]["content"]
            excess = total - self.cfg.max_context_chars
            body_start = content.find("<Execute>\n") + len("<Execute>\n")
            body_end = content.rfind("\n</Execute>")
            body = content[body_start:body_end]
            if _TRUNCATED in body or len(body) < 400:
                continue
            keep = max(200, len(body) - excess - len(_TRUNCATED))
            short = body[: keep // 2] + _TRUNCATED + body[len(body) - keep // 2 :]
            self.messages[index] = {**self.messages[index], "content": content[:body_start] + short + content[body_end:]}

    def _data_files(self, files) -> list[protocol.FileSpec]:
        root = Path(self.session.workspace)
        if files is None:
            return sorted(
                (p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                key=lambda p: p.relative_to(root).as_posix(),
            )
        specs: list[protocol.FileSpec] = []
        for f in files:
            if isinstance(f, tuple):
                specs.append(f)
                continue
            path = Path(f)
            specs.append(path if path.is_absolute() else root / path)
        return specs

    async def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        result = self.on_event(kind, payload)
        if inspect.isawaitable(result):
            await result


def answer_format(instruction: str) -> str:
    """The answer form a task prescribes, as the solver is reminded of it after each output ("" when none):
    `@mean[mean] @std[std] (numbers rounded to 2 decimal places)`. Long placeholders become `...`."""
    fields = matchers.answer_fields(instruction)
    if not fields:
        return ""
    form = " ".join(f.template(max_placeholder=24) for f in fields)
    places = {f.decimals for f in fields}
    if places == {None}:
        return form
    if len(places) == 1:
        return f"{form} (numbers rounded to {places.pop()} decimal places)"
    rounding = ", ".join(f"{f.name} to {f.decimals}" for f in fields if f.decimals is not None)
    return f"{form} (decimal places: {rounding})"


def _unsupported_by(result: Any) -> str | None:
    """Why an answer right after this cell would rest on no output: "failed", "silent", or None."""
    if result is None:
        return None
    if not result.ok:
        return "failed"
    return "silent" if not result.output().strip() else None


DATABASE_SUFFIXES = (".sqlite", ".sqlite3", ".db", ".duckdb")


def _database_names(files: list[protocol.FileSpec]) -> list[str]:
    names = [str(f[0]) if isinstance(f, tuple) else Path(f).name for f in files]
    return [n for n in names if n.lower().endswith(DATABASE_SUFFIXES)]


# --- reply normalisation ------------------------------------------------------------------------------------

_FENCE_BLOCK = re.compile(r"```[^\n]*\n.*?(?:```|\Z)", re.DOTALL)
_STRAY_CLOSE = re.compile(r"</(?:" + "|".join(protocol.TAGS) + r")>")


_NEXT_TAG = re.compile(r"<(?:Analyze|Understand|Code|Answer)>")


def _strip_echoed_execute(reply: str, last: Any) -> tuple[str, list[str]]:
    """Small models sometimes start by copying the feedback message, real <Execute> block included. A copy of output
    the sandbox really printed is not invented output: drop the copy (and the note after it), keep what follows."""
    stripped = reply.lstrip()
    if last is None or not stripped.startswith("<Execute>"):
        return reply, []
    end = stripped.find("</Execute>")
    if end == -1 or stripped[len("<Execute>"):end].strip() != last.output().strip():
        return reply, []
    rest = stripped[end + len("</Execute>"):]
    nxt = _NEXT_TAG.search(rest)
    return (rest[nxt.start():] if nxt else ""), ["copy of the previous <Execute> at the start of the reply removed"]


def _normalise(reply: str) -> tuple[str | None, list[str]]:
    """The reply as clean tagged text for one turn, and the repairs made. None when it has no tags and no code."""
    notes: list[str] = []
    text = reply.strip()
    parsed = protocol.parse(text)
    if not parsed.actions:
        if not _FENCE_BLOCK.search(text):
            return None, notes

    # Cut at an invented Execute: the model wrote output it never saw.
    for action in parsed.actions:
        if action.kind == "Execute":
            text = text[: action.start].rstrip()
            notes.append("model wrote its own <Execute>: cut there, its invented output discarded")
            parsed = protocol.parse(text)
            break

    pieces: list[str] = []
    seen_code = False
    for seg in parsed.segments:
        if isinstance(seg, protocol.Text):
            stray = _STRAY_CLOSE.sub("", seg.content)
            if not stray.strip():
                pieces.append(stray if pieces else "")
                continue
            fence = _FENCE_BLOCK.search(stray)
            if fence and not seen_code:
                before = stray[: fence.start()].strip()
                if before:
                    pieces.append(f"<Analyze>\n{before}\n</Analyze>\n")
                block = fence.group(0).rstrip()
                if not block.endswith("```") or block.count("```") % 2:
                    block += "\n```"
                pieces.append(f"<Code>\n{block}\n</Code>")
                notes.append("fenced code outside <Code> treated as <Code>")
                seen_code = True
                break
            pieces.append(f"<Analyze>\n{stray.strip()}\n</Analyze>")
            notes.append("text outside tags wrapped as <Analyze>")
            continue
        if seg.kind == "Code":
            # Re-close exactly once: engines that strip the stop string leave it open, others return it.
            pieces.append(f"<Code>{seg.content}</Code>")
            seen_code = True
            break
        if seg.kind == "Answer":
            if not seg.closed:
                notes.append("unclosed <Answer> closed")
            pieces.append(f"<Answer>{seg.content.rstrip()}\n</Answer>" if not seg.closed else seg.raw)
            break
        if not seg.closed:
            notes.append(f"unclosed <{seg.kind}> closed")
            pieces.append(f"<{seg.kind}>{seg.content.rstrip()}\n</{seg.kind}>")
        else:
            pieces.append(seg.raw)

    out = "".join(pieces).strip()
    if seen_code and _has_more_after_first_code(parsed):
        notes.append("text after </Code> dropped: it was written before the code ran")
    elif not seen_code and _has_more_after_answer(parsed):
        notes.append("text after </Answer> dropped")
    return out, notes


def _has_more_after_first_code(parsed: protocol.Parsed) -> bool:
    segs = parsed.segments
    for i, seg in enumerate(segs):
        if isinstance(seg, protocol.Action) and seg.kind == "Code":
            return any(s.raw.strip() for s in segs[i + 1 :])
    return False


def _has_more_after_answer(parsed: protocol.Parsed) -> bool:
    segs = parsed.segments
    for i, seg in enumerate(segs):
        if isinstance(seg, protocol.Action) and seg.kind == "Answer":
            return any(s.raw.strip() for s in segs[i + 1 :])
    return False


def _same_code(a: str, b: str) -> bool:
    return code_key(a) == code_key(b)


__all__ = ["AgentConfig", "run_agent", "STOP"]
