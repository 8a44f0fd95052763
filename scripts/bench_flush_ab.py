"""The bench's fair outbox flush alone (``bin_agent.tools.bench.bench_flush``: N events, three
alternating bare-paho/agent pairs), for whichever ``bin_agent`` is first on the path: run it with
``PYTHONPATH=<another tree>`` and without, alternately, to compare two pumps on one machine.

    python scripts/bench_flush_ab.py [EVENTS]        # default 10000; prints one JSON line
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import bin_agent
from bin_agent import preflight
from bin_agent.errors import run_script
from bin_agent.tools.bench import bench_config_data, bench_flush, loopback_broker, toml_text


def main() -> int:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory(prefix="bin-agent-flush-") as tmp:
        workdir = Path(tmp)
        with loopback_broker(workdir) as port:
            if port is None:
                print("no mosquitto", file=sys.stderr)
                return 1
            (workdir / "bench.toml").write_text(toml_text(bench_config_data(None, workdir, port, quick=False)))
            config = preflight.load(workdir / "bench.toml")
            print(Path(bin_agent.__file__).parent, json.dumps(bench_flush(config, workdir, events)))
    return 0


if __name__ == "__main__":
    run_script(main)
