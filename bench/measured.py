"""Run a manage.py command in this process and report its peak RSS on stderr.

python -m bench.measured import_events FILE --source bench
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from django.core.management import execute_from_command_line


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
    started = time.perf_counter()
    status = 0
    try:
        execute_from_command_line(["manage.py", *sys.argv[1:]])
    except SystemExit as exc:
        status = int(exc.code or 0)
    # VmHWM, not getrusage(): ru_maxrss survives exec, so it would report the parent's peak.
    status_lines = Path("/proc/self/status").read_text().splitlines()
    peak_mb = next(int(line.split()[1]) for line in status_lines if line.startswith("VmHWM:")) / 1024
    print(
        f"MEASURED seconds={time.perf_counter() - started:.3f} peak_rss_mb={peak_mb:.1f} status={status}",
        file=sys.stderr,
    )
    sys.exit(status)


if __name__ == "__main__":
    main()
