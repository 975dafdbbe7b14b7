"""The LangGraph state machines (DESIGN §8): interaction.py (synth generate) and reasoning.py (synth refine).

Nodes are module-level functions of `(state, deps)`: a test can call one alone with a state dict and a deps
object. The graph gets the deps at run time as LangGraph's runtime context (`ainvoke(..., context=deps)`), so the
checkpointed state holds only JSON-able data and a resumed run gets fresh deps.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from langgraph.runtime import Runtime


def bind(fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """`fn(state, deps)` as a LangGraph node or router that takes the deps from the runtime context."""
    if inspect.iscoroutinefunction(fn):
        async def node(state: Any, runtime: Runtime) -> Any:
            return await fn(state, runtime.context)
    else:
        def node(state: Any, runtime: Runtime) -> Any:  # type: ignore[misc]
            return fn(state, runtime.context)
    node.__name__ = fn.__name__
    node.__doc__ = fn.__doc__
    return node


async def thread_finished(compiled: Any, thread_id: str) -> bool:
    """True when the checkpointer holds a finished run of this thread."""
    snapshot = await compiled.aget_state({"configurable": {"thread_id": thread_id}})
    return bool(snapshot.values) and not snapshot.next


async def run_thread(compiled: Any, thread_id: str, initial: dict[str, Any], deps: Any) -> dict[str, Any]:
    """Run (or continue, after a crash) one thread of a compiled graph: a finished thread returns its final state,
    an interrupted one resumes from its last checkpoint, a new one starts from `initial`."""
    config = {"configurable": {"thread_id": thread_id}}
    snapshot = await compiled.aget_state(config)
    if snapshot.values and not snapshot.next:
        return snapshot.values  # finished before; its last node already wrote what it had to
    if snapshot.values and snapshot.next:
        return await compiled.ainvoke(None, config, context=deps)
    return await compiled.ainvoke(initial, config, context=deps)


__all__ = ["bind", "thread_finished", "run_thread"]
