"""``mhmoe ui``: the MLflow UI on 127.0.0.1 against the configured tracking store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from mhmoe.commands.bad_input import Parser, refuses_bad_input
from mhmoe.config.flags import int_between
from mhmoe.store.home import artifact_root_for, default_tracking_uri
from mhmoe.store.urls import check_tracking_uri


@refuses_bad_input("mhmoe ui")
def main(argv: list[str]) -> int:
    parser = Parser(prog="mhmoe ui", description="Start the MLflow UI on 127.0.0.1.")
    parser.add_argument("--tracking-uri", help="backend store (default: MLFLOW_TRACKING_URI or SQLite in MHMOE_HOME)")
    parser.add_argument("--port", type=int_between(1, 65535), default=5000, help="TCP port, 1..65535 (default 5000)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(args.port),
           "--backend-store-uri", uri, "--workers", "1"]
    if artifact_root_for(uri):
        cmd += ["--default-artifact-root", artifact_root_for(uri)]
    # Without this, even one worker starts a job-execution pool of ~9 processes (measured, MLflow 3.17).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (store: {uri})", flush=True)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    return serve_until_stopped(cmd, env)


def serve_until_stopped(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server in its own process group; SIGTERM/SIGINT to us stops the whole group.

    ``mlflow server`` starts a gunicorn/uvicorn tree: killing only its first process would leave
    the workers serving the port.
    """
    server = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = server.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError):  # stragglers the server did not stop itself
            os.killpg(server.pid, signal.SIGKILL)
    return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code
