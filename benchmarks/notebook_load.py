"""Loading a demo study in a JupyterHub kernel (the hub's token path) against a plain script.

The question: does reading images from a notebook on the platform cost more than reading
them from a script? Both run ``client.load_study(study)`` on the same demo study (four
series, HTJ2K as ``make up`` stores it), through the same nginx and guard, in one run:

* ``hub_kernel`` — code in a kernel of scientist's server, started through the server's
  REST API; ``neuronova_lib.connect()`` with no arguments (token from the hub's
  ``/services/neuronova-token/``, RFC 8693 exchange);
* ``script`` — this process, ``neuronova_lib.connect(url, username=..., password=...)``.

Repeats alternate between the two (so drift hits both); the figure is the ratio of the
medians of the load alone (goal: ≤ 1.1). Connecting is timed apart: a token exchange
through the hub against a password sign-in (argon2).

Usage: ``python benchmarks/notebook_load.py [--size small|medium] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import neuronova_lib
from neuronova_lib.db.users import demo_password
from neuronova_lib.demo import SIZES, write_demo_cases
from neuronova_lib.hub.remote import KernelClient, hub_api_token, signed_in_hub
from neuronova_lib.stack.local import local_platform
from neuronova_lib.stack.platform import load_folder

USER = "scientist"

KERNEL_SETUP = """
import json, time, neuronova_lib
_t = time.perf_counter()
client = neuronova_lib.connect()
print(json.dumps({"connect_s": time.perf_counter() - _t}))
"""

KERNEL_LOAD = """
_t = time.perf_counter()
_v = client.load_study("{study}", progress=False)
print(json.dumps({{"load_s": time.perf_counter() - _t, "shape": list(_v.array.shape)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="neuronova-bench-notebook-"))
    shape, spacing = SIZES[args.size]
    [case] = write_demo_cases(work / "demo", cases=1, seed=5, shape=shape, spacing=spacing)
    with local_platform(work / "home", hub_enabled=True, mlflow_enabled=False,
                        openemr_demo=False) as local:
        load_folder(local.settings, case.directory, htj2k=True)
        url, password = local.url, demo_password(local.settings, USER)
        web = signed_in_hub(url, USER, password)
        kernel = KernelClient(f"{url}/user/{USER}", hub_api_token(url, web, USER, "benchmark"))
        try:
            hub_connect = kernel.execute(KERNEL_SETUP).json()["connect_s"]
            started = time.perf_counter()
            client = neuronova_lib.connect(url, username=USER, password=password)
            script_connect = time.perf_counter() - started
            hub_times, script_times = [], []
            shape_seen = None
            for _ in range(args.repeats):
                answer = kernel.execute(KERNEL_LOAD.format(study=case.study_instance_uid)).json()
                hub_times.append(answer["load_s"])
                shape_seen = answer["shape"]
                started = time.perf_counter()
                volume = client.load_study(case.study_instance_uid, progress=False)
                script_times.append(time.perf_counter() - started)
                assert list(volume.array.shape) == shape_seen
        finally:
            kernel.shutdown()
    hub_median, script_median = statistics.median(hub_times), statistics.median(script_times)
    json.dump({
        "benchmark": "notebook_load",
        "size": args.size,
        "volume_shape": shape_seen,
        "repeats": args.repeats,
        "hub_kernel_load_s": round(hub_median, 4),
        "script_load_s": round(script_median, 4),
        "ratio_hub_to_script": round(hub_median / script_median, 3),
        "goal_ratio_max": 1.1,
        "hub_kernel_load_all_s": [round(t, 4) for t in hub_times],
        "script_load_all_s": [round(t, 4) for t in script_times],
        "connect_hub_exchange_s": round(hub_connect, 4),
        "connect_password_s": round(script_connect, 4),
    }, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
