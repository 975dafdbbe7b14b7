"""Load benchmark of `serve`: N concurrent clients against a real uvicorn server (separate process) whose model is
the scripted test double (one Code round, then the Answer) and whose sandbox is the real local one.

Reports: requests lost/failed (must be 0), p50/p99 of the end-to-end latency and of the server's own overhead
(latency minus the time the cell ran in the sandbox), and resource hygiene after idle threads expire: server RSS
after/before (must be within 10 %), thread workspaces left, server child processes left, generated files left.

    python benchmarks/serve_load.py [--clients 50] [--max-concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = 'rows = open("data.csv").read().splitlines()\nprint("rows", len(rows) - 1)\n'


def _reply(messages) -> str:
    """Scripted agent: one Code round on the first turn, then an Answer quoting the Execute output."""
    start = max(i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith("# Instruction"))
    if start == len(messages) - 1:
        return f"<Analyze>\nCount the rows.\n</Analyze>\n<Code>\n```python\n{CODE}```\n</Code>"
    output = messages[-1]["content"].split("<Execute>\n", 1)[-1].split("\n</Execute>", 1)[0]
    return f"<Answer>\n{output}\n</Answer>"


def _child(args: argparse.Namespace) -> None:
    import uvicorn

    sys.path.insert(0, str(REPO / "tests"))
    from doubles import ScriptedChatModel  # the test double: benchmarks only, never a product default

    from serve.app import create_app
    from serve.config import ServeConfig

    config = ServeConfig(workspace_root=Path(args.root), max_concurrent=args.max_concurrent, max_queued=1000,
                         thread_ttl_s=args.ttl, cleanup_interval_s=0.25)
    uvicorn.run(create_app(config, model=ScriptedChatModel([_reply])), host="127.0.0.1", port=args.port,
                log_level="warning", backlog=2048)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> tuple[float, float]:
    """(CPU seconds of the server process itself, CPU seconds of its reaped children: the sandboxed cells)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _hygiene(pid: int, root: Path) -> dict:
    threads = root / "threads"
    return {"rss_kb": _rss_kb(pid), "workspaces": len(list(threads.iterdir())) if threads.exists() else 0,
            "children": len(_descendants(pid)), "files": len(list((root / "files").iterdir()))}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _one(client, url: str, file_id: str, index: int) -> dict:
    body = {"model": "scripted", "messages": [{"role": "user", "content": f"How many rows? (client {index})"}],
            "file_ids": [file_id], "stream": index % 2 == 1}
    started = time.perf_counter()
    try:
        if body["stream"]:
            final = None
            async with client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    return {"ok": False, "error": f"HTTP {resp.status_code}"}
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
                            final = chunk
            data = final or {}
        else:
            resp = await client.post(url, json=body)
            if resp.status_code != 200:
                return {"ok": False, "error": f"HTTP {resp.status_code}: {resp.text[:200]}"}
            data = resp.json()
    except Exception as exc:  # a lost request is a result here, not a crash
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    latency = time.perf_counter() - started
    answer = data.get("answer") or ""
    summary = data.get("trajectory") or {}
    return {"ok": answer.strip() == "rows 3", "error": None if answer.strip() == "rows 3" else f"answer {answer!r}",
            "latency": latency, "execution": summary.get("execution_s", 0.0), "stream": body["stream"]}


async def _load(base: str, clients: int, file_id: str) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        return await asyncio.gather(*(_one(client, base + "/v1/chat/completions", file_id, i) for i in range(clients)))


def _wait_idle(base: str, pid: int, root: Path, timeout: float = 120) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(base + "/health").json()
        state = _hygiene(pid, root)
        if health["threads"] == 0 and state["workspaces"] == 0 and state["children"] == 0:
            return state
        time.sleep(0.25)
    return _hygiene(pid, root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--ttl", type=float, default=1.0, help="thread TTL of the server, seconds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0

    import httpx

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp) / "root"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, __file__, "--child", "--port", str(port), "--root", str(root),
             "--max-concurrent", str(args.max_concurrent), "--ttl", str(args.ttl)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            for _ in range(300):
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            data = Path(tmp) / "data.csv"
            data.write_text("a,b\n1,2\n3,4\n5,6\n")
            with open(data, "rb") as fh:
                file_id = httpx.post(base + "/v1/files", files={"file": ("data.csv", fh)}).json()["id"]
            warm = asyncio.run(_load(base, 4, file_id))  # imports and first-use caches happen here, not in the run
            assert all(r["ok"] for r in warm), warm
            sequential = [asyncio.run(_load(base, 1, file_id))[0] for _ in range(10)]
            before = _wait_idle(base, server.pid, root)

            cpu_before = _cpu_s(server.pid)
            started = time.perf_counter()
            results = asyncio.run(_load(base, args.clients, file_id))
            wall = time.perf_counter() - started
            cpu_after = _cpu_s(server.pid)
            peak = _hygiene(server.pid, root)
            after = _wait_idle(base, server.pid, root)
        finally:
            server.terminate()
            server.wait(30)

    failed = [r for r in results if not r["ok"]]
    done = [r for r in results if r["ok"]]
    latency = [r["latency"] for r in done]
    overhead = [r["latency"] - r["execution"] for r in done]
    print(f"clients: {args.clients} concurrent (max_concurrent={args.max_concurrent}); "
          f"{sum(r.get('stream', False) for r in results)} streamed; wall {wall:.2f} s")
    print(f"lost or failed: {len(failed)}" + (f"  e.g. {failed[0]['error']}" if failed else ""))
    if done:
        print(f"latency   p50 {_pct(latency, .5) * 1000:7.1f} ms   p99 {_pct(latency, .99) * 1000:7.1f} ms")
        print(f"overhead  p50 {_pct(overhead, .5) * 1000:7.1f} ms   p99 {_pct(overhead, .99) * 1000:7.1f} ms   "
              f"(latency minus sandbox cell time; mean share of latency "
              f"{statistics.mean(o / lat for o, lat in zip(overhead, latency)):.2f})")
    alone = [r["latency"] - r["execution"] for r in sequential if r["ok"]]
    print(f"overhead with one client at a time: p50 {_pct(alone, .5) * 1000:.1f} ms (10 requests); "
          f"under load / alone: {_pct(overhead, .5) / _pct(alone, .5):.1f}x" if done and alone else "")
    server_cpu = (cpu_after[0] - cpu_before[0]) / args.clients * 1000
    cells_cpu = (cpu_after[1] - cpu_before[1]) / args.clients * 1000
    print(f"CPU per request: server process {server_cpu:.1f} ms, sandboxed cells {cells_cpu:.1f} ms "
          f"(on {os.cpu_count()} cores shared with other work: under load the wait is for CPU, not the server)")
    ratio = after["rss_kb"] / before["rss_kb"]
    print(f"server RSS before {before['rss_kb'] / 1024:.1f} MB, peak {peak['rss_kb'] / 1024:.1f} MB, "
          f"after {after['rss_kb'] / 1024:.1f} MB  -> after/before ratio {ratio:.3f}")
    print(f"during run: {peak['workspaces']} workspaces, {peak['children']} child processes; after expiry: "
          f"{after['workspaces']} workspaces, {after['children']} child processes, {after['files']} stored files "
          f"(before: {before['files']})")
    ok = not failed and ratio <= 1.10 and after["workspaces"] == 0 and after["children"] == 0 \
        and after["files"] == before["files"]
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
