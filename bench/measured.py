"""Run a manage.py command in this process and report its peak RSS on stderr.

python -m bench.measured import_events FILE --source bench

The peak counts the command's worker processes too: a sampler thread sums the memory of
this process and all its descendants every 50 ms and keeps the largest sums, both of RSS
(an upper bound: pages a forked worker shares with its parent count once per process) and
of PSS (each shared page split between its sharers: the memory the command really takes).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from django.core.management import execute_from_command_line


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of pid in kB; zeros once it has exited."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in lines[1:] if line.endswith("kB")}
    return values.get("Rss", 0), values.get("Pss", 0)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children)
            pending.extend(int(child) for child in children)
    return found


class _PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stopped.wait(0.05):
            samples = [_memory_kb(pid) for pid in [me, *_descendants(me)]]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(rss for rss, _ in samples))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss for _, pss in samples))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
    sampler = _PeakSampler()
    sampler.start()
    started = time.perf_counter()
    status = 0
    try:
        execute_from_command_line(["manage.py", *sys.argv[1:]])
    except SystemExit as exc:
        status = int(exc.code or 0)
    elapsed = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    # VmHWM, not getrusage(): ru_maxrss survives exec, so it would report the parent's peak.
    status_lines = Path("/proc/self/status").read_text().splitlines()
    own_peak_kb = next(int(line.split()[1]) for line in status_lines if line.startswith("VmHWM:"))
    peak_rss_mb = max(own_peak_kb, sampler.peak_rss_kb) / 1024
    peak_pss_mb = max(sampler.peak_pss_kb / 1024, 0.0)
    print(
        f"MEASURED seconds={elapsed:.3f} peak_rss_mb={peak_rss_mb:.1f} peak_pss_mb={peak_pss_mb:.1f} status={status}",
        file=sys.stderr,
    )
    sys.exit(status)


if __name__ == "__main__":
    main()
