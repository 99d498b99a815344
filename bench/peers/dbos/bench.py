"""The DBOS peer of the geosaga benchmark: the common workload (WORKLOAD.md) as a DBOS
workflow with three steps and two compensations, started in-process and awaited.

Driven by the harness over stdin/stdout, one line each way:
  run C N   ->  RESULT {"completed": ..., "compensated": ..., "latencies_us": [...], ...}
  quit      ->  exits
The system database comes from argv[1] (postgresql://... or sqlite:///...).
Note that in-process calls have no HTTP hop, which favours DBOS.
"""

import asyncio
import json
import os
import sys
import time

from dbos import DBOS


class BusinessError(Exception):
    """A non-retryable business failure (every 10th saga, at notify)."""


@DBOS.step()
async def debit(seq: int) -> dict:
    return {"step": "debit", "seq": seq, "id": f"d-{seq}", "ok": True}


@DBOS.step()
async def credit(seq: int) -> dict:
    return {"step": "credit", "seq": seq, "id": f"c-{seq}", "ok": True}


@DBOS.step()
async def notify(seq: int) -> dict:
    if seq % 10 == 0:
        raise BusinessError(f"saga {seq}: the receiver refuses the notification")
    return {"step": "notify", "seq": seq, "id": f"n-{seq}", "ok": True}


@DBOS.step()
async def undo_credit(seq: int) -> dict:
    return {"step": "undo credit", "seq": seq, "ok": True}


@DBOS.step()
async def undo_debit(seq: int) -> dict:
    return {"step": "undo debit", "seq": seq, "ok": True}


@DBOS.workflow()
async def transfer(seq: int) -> str:
    done = []
    try:
        await debit(seq)
        done.append(undo_debit)
        await credit(seq)
        done.append(undo_credit)
        await notify(seq)
        return "completed"
    except BusinessError:
        for undo in reversed(done):
            await undo(seq)
        return "compensated"


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def closed_loop(concurrency: int, n: int) -> dict:
    next_seq = 1
    counts = {"completed": 0, "compensated": 0, "other": 0}
    latencies = []
    errors = []

    async def client():
        nonlocal next_seq
        while True:
            seq = next_seq
            if seq > n:
                return
            next_seq += 1
            t0 = time.perf_counter()
            try:
                outcome = await transfer(seq)
            except Exception as e:  # counted, and the harness fails the run
                outcome = "other"
                if len(errors) < 5:
                    errors.append(repr(e))
            latencies.append(int((time.perf_counter() - t0) * 1e6))
            counts[outcome if outcome in counts else "other"] += 1

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss0 = status_kb("VmRSS")
    cpu0 = os.times()
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    return {
        **counts,
        "errors": errors,
        "wall_s": wall,
        "latencies_us": latencies,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "rss_before_kb": rss0,
        "hwm_kb": status_kb("VmHWM"),
    }


async def main() -> None:
    url = sys.argv[1]
    DBOS(config={"name": "geosaga-bench", "system_database_url": url})
    DBOS.launch()
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "run":
            result = await closed_loop(int(words[1]), int(words[2]))
            print("RESULT " + json.dumps(result), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    asyncio.run(main())
