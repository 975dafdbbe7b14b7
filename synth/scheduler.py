"""The scheduler: where a run's jobs execute — `local` (asyncio tasks in this process) or `ray` (a Ray cluster).

    scheduler = make_scheduler("ray", address="auto")      # or "local" (the default)
    outcomes = await scheduler.execute(work, concurrency=32)

It knows no workload: a `Work` is one run's jobs as seen from the driver (the `synth generate` / `synth refine`
process, see synth/generate.py and synth/refine.py), and a `WorkerRecipe` says how a remote worker rebuilds what
the jobs need. The driver alone owns the run directory: records.jsonl, rejected.jsonl, checkpoints.sqlite and
stats.json are written only there. With `local` every job runs on the driver's compiled graph with its SQLite
checkpointer. With `ray`, a few long-lived worker actors (each an async actor running many jobs at once) build
the models, sandbox and graph once from the picklable recipe; a job runs to completion on a worker against an
in-memory checkpointer, and the worker returns the final state with the rows the graph wanted to write. The
driver writes them (dedupe by id) and stores the final state in its own checkpointer, so `--resume` skips it
whichever scheduler finished it. A worker that dies takes only its in-flight jobs with it: the driver resubmits
exactly those (from scratch — the shared response cache makes that cheap) to a live or restarted worker. Workers
close their recipe (models) before they are stopped.

Per-model concurrency limits of shared endpoints (`openai:…?max_concurrency=N`) hold cluster-wide: every worker's
LLM call for that spec first takes a lease from one named limiter actor. Leases expire (a killed worker cannot
hold a permit forever).
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Literal, Sequence

from synth.errors import SynthError

SchedulerName = Literal["local", "ray"]
SCHEDULERS: tuple[str, ...] = ("local", "ray")
_RAY_INSTALL = "pip install 'ds-synth[ray]'"


class SchedulerError(SynthError, RuntimeError):
    """The scheduler cannot run (ray missing, cluster unreachable, workers cannot start); one line saying why."""


@dataclass
class Job:
    """One episode: its thread id (episode id, or refine:<item id>) and the JSON-able input of the graph."""

    key: str
    payload: dict[str, Any]


@dataclass
class JobResult:
    """What a remote worker sends back for one episode."""

    key: str
    state: dict[str, Any]  # the graph's final state (JSON-able)
    records: list[dict[str, Any]] = field(default_factory=list)  # rows the graph asked the sink to write
    rejected: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    worker_pid: int = 0


class WorkerRecipe(ABC):
    """Picklable: how a remote worker builds the models, sandbox and graph of a run (once per worker)."""

    @abstractmethod
    async def open(self, sink: Any, limiter: "_LimiterClient | None") -> Any:
        """Build everything and return the uncompiled graph whose nodes write to `sink`."""

    @abstractmethod
    async def invoke(self, compiled: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one episode to completion on the compiled graph; return its final state."""

    def add_context(self, context: dict[str, Any]) -> None:
        """Driver news sent along with a job (e.g. instructions accepted elsewhere, for near-duplicate checks)."""

    async def close(self) -> None:
        """Release models and other resources."""


class Work(ABC):
    """One run's jobs as the driver sees them; synth/generate.py and synth/refine.py provide these."""

    jobs: Sequence[Job]

    @abstractmethod
    async def is_done(self, job: Job) -> bool:
        """Finished in an earlier (interrupted) run: skip it."""

    @abstractmethod
    async def run_local(self, job: Job) -> str:
        """Run the episode in this process; return its outcome."""

    @abstractmethod
    def recipe(self) -> WorkerRecipe:
        """What remote workers need to run episodes of this run."""

    @abstractmethod
    async def accept(self, job: Job, result: JobResult) -> str:
        """Write a remote episode's rows and final state into the run dir; return its outcome."""

    def context_for(self, worker: int) -> dict[str, Any]:
        return {}

    def skipped(self, job: Job) -> None:
        """Progress hook: a finished episode was skipped."""

    def failed(self, job: Job, error: BaseException) -> None:
        """Progress hook: an episode failed (resume retries it)."""


class Scheduler(ABC):
    name: str

    @abstractmethod
    async def execute(self, work: Work, *, concurrency: int) -> list[str]:
        """Run every job of `work` (at most `concurrency` at once); one outcome per job, in job order.

        Outcomes are the graph's ("accepted", "rejected", "duplicate"), or "done" (skipped) or "error". A cancelled
        call (Ctrl-C) cancels what is in flight and re-raises."""


async def run_to_end(scheduler: Scheduler, work: Work, *, concurrency: int, progress: Any,
                     close: Sequence[Any] = ()) -> tuple[int, bool]:
    """What `synth generate` and `synth refine` do around the scheduler: show progress, run every job, then stop
    the display and close the models the run opened, even on Ctrl-C. Returns (episodes that errored,
    interrupted)."""
    progress.start()
    try:
        outcomes = await scheduler.execute(work, concurrency=concurrency)
        return outcomes.count("error"), False
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 0, True
    finally:
        progress.stop()
        for model in {id(m): m for m in close}.values():
            await model.aclose()


async def _gather_all(coroutines: list[Awaitable[str]]) -> list[str]:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _enough_threads(loop: asyncio.AbstractEventLoop, concurrency: int) -> None:
    """Sandbox calls (open, cells, snapshots) block a worker thread each; asyncio's default pool has cores + 4
    threads, which would quietly cap a 2-core machine at 6 episodes in the sandbox at once."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = 2 * concurrency + 4
    current = getattr(loop, "_ds_synth_threads", 0)
    if current < wanted and wanted > min(32, (os.cpu_count() or 1) + 4):
        loop.set_default_executor(ThreadPoolExecutor(max_workers=wanted, thread_name_prefix="ds-synth"))
        loop._ds_synth_threads = wanted  # type: ignore[attr-defined]


class LocalScheduler(Scheduler):
    """asyncio tasks in this process, at most `concurrency` episodes at once (the default)."""

    name = "local"

    async def execute(self, work: Work, *, concurrency: int) -> list[str]:
        semaphore = asyncio.Semaphore(concurrency)
        _enough_threads(asyncio.get_running_loop(), concurrency)

        async def one(job: Job) -> str:
            async with semaphore:
                if await work.is_done(job):
                    work.skipped(job)
                    return "done"
                try:
                    return await work.run_local(job)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one broken episode must not end the run; resume retries it
                    work.failed(job, exc)
                    return "error"

        return await _gather_all([one(job) for job in work.jobs])


class RayScheduler(Scheduler):
    """Episodes on worker actors of a Ray cluster; the driver keeps the run dir.

    address:          Ray address ("auto", "ray://host:10001", …); None starts or joins a local Ray.
    workers:          worker actors (default: the cluster's CPU count, at most `concurrency`).
    cpus_per_worker:  Ray CPUs each worker reserves (its sandbox cells run in its own subprocesses).
    max_attempts:     tries per episode when its worker dies (the job is resubmitted, never duplicated).
    lease_s:          how long a cluster-wide LLM permit may be held before it is reclaimed.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1.0,
                 max_attempts: int = 3, lease_s: float = 600.0, init_options: dict[str, Any] | None = None) -> None:
        if workers is not None and workers < 1:
            raise SchedulerError(f"--executor ray: workers must be >= 1, got {workers}")
        if max_attempts < 1:
            raise SchedulerError(f"--executor ray: max_attempts must be >= 1, got {max_attempts}")
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.init_options = dict(init_options or {})
        self.resubmitted = 0  # episodes sent again because their worker died
        self._actors: list[Any] = []
        self._limiter: Any = None

    # -- cluster ---------------------------------------------------------------------------------------------

    def _connect(self) -> tuple[Any, bool]:
        ray = import_ray()
        if ray.is_initialized():
            return ray, False
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level="WARNING",
                     **self.init_options)
        except Exception as exc:  # ConnectionError, ValueError … — one line, with the address
            raise SchedulerError(f"--executor ray: cannot connect to Ray at {self.address or 'a local instance'}: "
                                f"{' '.join(str(exc).split())[:300]}") from None
        return ray, True

    def worker_pids(self) -> list[int]:
        """PIDs of the live worker actors (for operators and tests)."""
        ray = import_ray()
        return list(ray.get([actor.pid.remote() for actor in self._actors]))

    def limiter_peaks(self) -> dict[str, int]:
        """Most LLM calls held at once per model spec, cluster-wide (from the limiter actor)."""
        if self._limiter is None:
            return {}
        return dict(import_ray().get(self._limiter.peaks.remote()))

    # -- running ---------------------------------------------------------------------------------------------

    async def execute(self, work: Work, *, concurrency: int) -> list[str]:
        ray, started = self._connect()
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

        worker_lost = (RayActorError, WorkerCrashedError, ObjectLostError)

        run_tag = uuid.uuid4().hex[:12]
        limiter_name = f"ds-synth-limiter-{run_tag}"
        try:
            self._limiter = ray.remote(_ModelLimiter).options(
                name=limiter_name, max_concurrency=100_000, num_cpus=0).remote(self.lease_s)
            cpus = float(ray.cluster_resources().get("CPU", 1))
            count = self.workers or max(1, int(cpus // max(self.cpus_per_worker, 0.001)))
            count = max(1, min(count, concurrency))
            per_worker = math.ceil(concurrency / count)
            worker_class = ray.remote(_EpisodeWorker)
            recipe = work.recipe()
            self._actors = [
                worker_class.options(num_cpus=self.cpus_per_worker, max_restarts=self.max_attempts,
                                     max_task_retries=0, max_concurrency=per_worker).remote(recipe, limiter_name)
                for _ in range(count)
            ]
            in_flight = [0] * count
            gate = asyncio.Semaphore(concurrency)

            async def one(job: Job) -> str:
                async with gate:
                    if await work.is_done(job):
                        work.skipped(job)
                        return "done"
                    lost: BaseException | None = None
                    dead: set[int] = set()  # workers that lost this job: a restarting actor refuses calls for a while
                    for attempt in range(self.max_attempts):
                        live = [i for i in range(count) if i not in dead] or list(range(count))
                        index = min(live, key=lambda i: in_flight[i])
                        in_flight[index] += 1
                        try:
                            result = await self._actors[index].run.remote(job.key, job.payload,
                                                                          work.context_for(index))
                        except worker_lost as exc:  # the worker died with this job in flight: send it again
                            lost = exc
                            dead.add(index)
                            self.resubmitted += 1
                            await asyncio.sleep(min(5.0, 0.5 * (attempt + 1)))
                            continue
                        except RayTaskError as exc:  # the worker could not even start (bad model spec …)
                            work.failed(job, _cause(exc))
                            return "error"
                        finally:
                            in_flight[index] -= 1
                        outcome = await work.accept(job, result)
                        if result.error:
                            work.failed(job, RuntimeError(result.error))
                            return "error"
                        return outcome
                    work.failed(job, SchedulerError(f"worker lost {self.max_attempts} time(s): "
                                                   f"{' '.join(str(lost).split())[:200]}"))
                    return "error"

            return await _gather_all([one(job) for job in work.jobs])
        finally:
            self._close_workers(ray)
            for actor in self._actors:
                ray.kill(actor)
            if self._limiter is not None:
                self._peaks_at_end = self._safe_peaks(ray)
                ray.kill(self._limiter)
                self._limiter = None
            self._actors = []
            if started:
                ray.shutdown()

    def _close_workers(self, ray: Any) -> None:
        """Let every live worker close its recipe (models, servers) before it is killed."""
        pending = [actor.close.remote() for actor in self._actors]
        for ref in pending:
            try:
                ray.get(ref, timeout=30)
            except Exception:  # a dead or stuck worker: killing it is all that is left
                pass

    def _safe_peaks(self, ray: Any) -> dict[str, int]:
        try:
            return dict(ray.get(self._limiter.peaks.remote(), timeout=10))
        except Exception:
            return {}

    @property
    def peaks(self) -> dict[str, int]:
        """Per model spec, the most LLM calls the limiter let run at once during the last execute()."""
        return getattr(self, "_peaks_at_end", {})


def _cause(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SchedulerError(f"--executor ray needs Ray; install it with: {_RAY_INSTALL}") from None
    return ray


def make_scheduler(name: str = "local", *, address: str | None = None, workers: int | None = None) -> Scheduler:
    """The scheduler a run's `executor` option names."""
    if name == "local":
        if address:
            raise SchedulerError("--ray-address is only used with --executor ray")
        return LocalScheduler()
    if name == "ray":
        import_ray()  # fail now, with the install line, rather than after the run dir is set up
        return RayScheduler(address=address, workers=workers)
    raise SchedulerError(f"unknown --executor {name!r}; expected one of {', '.join(SCHEDULERS)}")


# --- worker side -----------------------------------------------------------------------------------------------


class _CollectingSink:
    """The sink a remote graph writes to: rows are kept per episode and sent back to the driver, which dedupes."""

    def __init__(self) -> None:
        self._records: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._rejected: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.accepted_instructions: list[str] = []
        self.done_episodes: set[str] = set()
        self.record_ids: set[str] = set()

    async def write_record(self, record: dict[str, Any], episode_id: str) -> bool:
        self._records[episode_id].append(record)
        return True  # the driver decides what is new; a duplicate is reported as such there

    async def write_rejected(self, row: dict[str, Any]) -> bool:
        self._rejected[row["episode_id"]].append(row)
        return True

    def take(self, episode_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self._records.pop(episode_id, []), self._rejected.pop(episode_id, [])


class _EpisodeWorker:
    """A Ray actor (async: runs up to max_concurrency episodes at once) holding one built graph."""

    def __init__(self, recipe: WorkerRecipe, limiter_name: str | None) -> None:
        self.recipe = recipe
        self.limiter_name = limiter_name
        self._compiled: Any = None
        self._saver: Any = None
        self._opening: asyncio.Future | None = None
        self.sink = _CollectingSink()

    async def _open(self) -> None:
        from langgraph.checkpoint.memory import InMemorySaver

        limiter = _LimiterClient(self.limiter_name) if self.limiter_name else None
        graph = await self.recipe.open(self.sink, limiter)
        self._saver = InMemorySaver()
        self._compiled = graph.compile(checkpointer=self._saver)

    async def run(self, key: str, payload: dict[str, Any], context: dict[str, Any]) -> JobResult:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await self._opening
        self.recipe.add_context(context)
        error = None
        state: dict[str, Any] = {}
        try:
            state = dict(await self.recipe.invoke(self._compiled, payload))
        except Exception as exc:  # reported to the driver; the episode stays unfinished there
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        records, rejected = self.sink.take(key)
        # The driver keeps the finished state; this worker's memory must not grow with the run.
        await self._saver.adelete_thread(key)
        return JobResult(key=key, state=state, records=records, rejected=rejected, error=error,
                         worker_pid=os.getpid())

    def pid(self) -> int:
        return os.getpid()

    async def close(self) -> None:
        if self._opening is not None and self._opening.done() and not self._opening.exception():
            await self.recipe.close()


# --- cluster-wide per-model concurrency -------------------------------------------------------------------------


class _ModelLimiter:
    """A named async Ray actor: one semaphore per model spec, handed out as expiring leases."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._held: dict[str, int] = defaultdict(int)
        self._peaks: dict[str, int] = defaultdict(int)
        self._reaper: asyncio.Task | None = None

    async def acquire(self, key: str, limit: int) -> str:
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap())
        semaphore = self._semaphores.setdefault(key, asyncio.Semaphore(max(1, int(limit))))
        await semaphore.acquire()
        token = uuid.uuid4().hex
        self._leases[token] = (key, time.monotonic() + self.lease_s)
        self._held[key] += 1
        self._peaks[key] = max(self._peaks[key], self._held[key])
        return token

    async def release(self, token: str) -> None:
        lease = self._leases.pop(token, None)
        if lease is not None:
            self._held[lease[0]] -= 1
            self._semaphores[lease[0]].release()

    async def _reap(self) -> None:
        while True:  # a worker killed mid-call never releases: its lease runs out instead
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for token, (_, deadline) in list(self._leases.items()):
                if deadline < now:
                    await self.release(token)

    def peaks(self) -> dict[str, int]:
        return dict(self._peaks)


class _LimiterClient:
    """A worker's handle on the limiter actor (looked up by name, so recipes stay picklable)."""

    def __init__(self, name: str) -> None:
        self._actor = import_ray().get_actor(name)

    async def acquire(self, key: str, limit: int) -> str:
        return await self._actor.acquire.remote(key, limit)

    def release(self, token: str) -> None:
        self._actor.release.remote(token)  # fire and forget: nothing to wait for


class ClusterLimitedModel:
    """Wraps a ChatModel so each call holds a cluster-wide permit for `key` (at most `limit` calls at once)."""

    def __init__(self, inner: Any, limiter: _LimiterClient, key: str, limit: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.family = inner.family
        self._limiter = limiter
        self._key = key
        self._limit = limit

    def __getattr__(self, attribute: str) -> Any:
        # model, seed … stay visible so the response cache keys are the same as in a local run.
        return getattr(self.inner, attribute)

    async def chat(self, messages: list[Any], **kwargs: Any) -> Any:
        token = await self._limiter.acquire(self._key, self._limit)
        try:
            return await self.inner.chat(messages, **kwargs)
        finally:
            self._limiter.release(token)

    async def aclose(self) -> None:
        await self.inner.aclose()


def load_worker_models(specs: dict[str, str], *, base_url: str | None, cache_path: Path,
                       limiter: _LimiterClient | None) -> dict[str, Any]:
    """role → cached model (synth.llm.load_role_models); endpoints every worker shares get the cluster limit."""
    from synth.llm import load_role_models

    def cluster_limited(model: Any, spec: str) -> Any:
        limit = getattr(model, "max_concurrency", None)
        if limiter is not None and isinstance(limit, int):
            return ClusterLimitedModel(model, limiter, spec, limit)
        return model

    return load_role_models(specs, base_url=base_url, cache_path=cache_path, wrap=cluster_limited)


def worker_paths(run_dir: Path, tag: str) -> tuple[Path, Path]:
    """(cache file, work dir) for a worker: the run dir's when this machine sees it, else local temp paths."""
    if run_dir.is_dir():
        return run_dir / "cache.sqlite", run_dir / "work" / f"{tag}-{os.getpid()}"
    local = Path(tempfile.gettempdir()) / f"ds-synth-{run_dir.name}"
    local.mkdir(parents=True, exist_ok=True)
    local.chmod(0o755)  # sandbox cells run as an unprivileged uid and must reach their workspace
    return local / "cache.sqlite", local / "work" / f"{tag}-{os.getpid()}"


async def close_models(models: dict[str, Any]) -> None:
    for model in {id(m): m for m in models.values()}.values():
        await model.aclose()


# --- a run over a LangGraph graph (generate and refine both are) ------------------------------------------------------------------------


class GraphWork(Work):
    """A run over a LangGraph graph: the driver's compiled graph (SQLite checkpointer), sink and progress.

    invoke:      `invoke(compiled, payload)` runs one job on the driver's compiled graph.
    recipe:      builds the WorkerRecipe (called only when a remote scheduler needs one).
    end_nodes:   (node that ends an accepted episode, node that ends a rejected one): a remote episode's final
                 state is stored as written by that node, so the checkpointer shows it finished.
    share_instructions: send accepted instructions to workers for their near-duplicate checks (generate).
    """

    def __init__(self, jobs: Sequence[Job], *, compiled: Any, sink: Any, progress: Any,
                 invoke: Any, recipe: Any, end_nodes: tuple[str, str] = ("emit", "reject"),
                 share_instructions: bool = False) -> None:
        self.jobs = list(jobs)
        self.compiled = compiled
        self.sink = sink
        self.progress = progress
        self._invoke = invoke
        self._recipe = recipe
        self.end_nodes = end_nodes
        self.share_instructions = share_instructions
        self._sent: dict[int, int] = defaultdict(int)

    async def is_done(self, job: Job) -> bool:
        from synth.graphs import thread_finished

        return job.key in self.sink.done_episodes or await thread_finished(self.compiled, job.key)

    async def run_local(self, job: Job) -> str:
        state = await self._invoke(self.compiled, job.payload)
        return str(state.get("outcome"))

    def recipe(self) -> WorkerRecipe:
        return self._recipe()

    def context_for(self, worker: int) -> dict[str, Any]:
        if not self.share_instructions:
            return {}
        known = self.sink.accepted_instructions
        start, self._sent[worker] = self._sent[worker], len(known)
        return {"instructions": known[start:]} if len(known) > start else {}

    async def accept(self, job: Job, result: JobResult) -> str:
        written = [await self.sink.write_record(record, job.key) for record in result.records]
        for row in result.rejected:
            await self.sink.write_rejected(row)
        if any(written):
            outcome = "accepted"
        elif written:
            outcome = "duplicate"
        elif result.rejected:
            outcome = "rejected"
        else:
            outcome = str(result.state.get("outcome") or "error")
        if result.state and not result.error:
            node = self.end_nodes[1] if result.state.get("outcome") == "rejected" else self.end_nodes[0]
            config = {"configurable": {"thread_id": job.key}}
            await self.compiled.aupdate_state(config, {**result.state, "outcome": outcome}, as_node=node)
            self.progress.event("done", {"episode": job.key, "outcome": outcome, "usage": result.state.get("usage")})
        return outcome

    def skipped(self, job: Job) -> None:
        self.progress.skip()

    def failed(self, job: Job, error: BaseException) -> None:
        self.progress.error(job.key, error)


__all__ = [
    "SCHEDULERS", "Scheduler", "SchedulerError", "Job", "JobResult", "LocalScheduler", "RayScheduler", "Work",
    "WorkerRecipe", "ClusterLimitedModel", "GraphWork", "make_scheduler", "import_ray", "run_to_end",
    "load_worker_models", "worker_paths", "close_models",
]
