"""lviv_c.sweep on a real local Ray cluster: a head node on 127.0.0.1 and a second node on
127.0.0.2 (both loopback), started here with `ray start` and torn down at the end (also when a
test fails). A 2-config x 2-seed sweep survives the death of the second node mid-trial; a killed
driver re-run skips what had finished; a failing trial is recorded; the records have the fields
of the in-process run."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'lviv_c[distributed]')")
psutil = pytest.importorskip("psutil", reason="psutil (installed with Ray) is not importable")

from lviv_c import sweep, synthetic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `ray` through this interpreter (the console script may be missing from a reused environment)
RAY = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"]
CFG = {"model": "ln", "grid": {"gamma": [0.01, 0.1]}, "seeds": [1, 2],
       "train": {"max_iter": 100, "patience": 200}, "early_stop": False}
CFG2 = dict(CFG, seeds=[3, 4])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               RAY_health_check_initial_delay_ms="0", RAY_health_check_period_ms="1000",
               RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p))
    return env


def _processes(keys, port):
    """Processes of one node: their command line names its temp dir (or the cluster's GCS
    port), plus all their descendants."""
    me = os.getpid()
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == me:
            continue
        try:
            cmd = p.info["cmdline"] or []
            if any(k in c for c in cmd for k in keys) or (
                    port and any(c.endswith(f":{port}") and c.startswith("--address=") for c in cmd)):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except psutil.Error:
            pass
    return list(found.values())


def _kill(procs):
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def _ray_start(args, env):
    r = subprocess.run(RAY + ["start", "--disable-usage-stats", "--object-store-memory", "80000000",
                        "--num-cpus", "1"] + args, env=env, capture_output=True, text=True,
                       timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


class Cluster:
    def __init__(self, base):
        self.base = base
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head_dir = os.path.join(base, "h")
        self.worker_dir = os.path.join(base, "w")
        self.env = _env()

    def start_head(self):
        _ray_start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                    "--include-dashboard", "false", "--temp-dir", self.head_dir,
                    "--ray-client-server-port", str(_free_port()),
                    "--dashboard-agent-listen-port", str(_free_port()),
                    "--min-worker-port", "0", "--max-worker-port", "0"], self.env)

    def start_worker(self):
        _ray_start(["--address", self.address, "--node-ip-address", "127.0.0.2",
                    "--temp-dir", self.worker_dir,
                    "--dashboard-agent-listen-port", str(_free_port()),
                    "--min-worker-port", "0", "--max-worker-port", "0"], self.env)

    def worker_node(self):
        return _processes([self.worker_dir + os.sep], None)

    def stop(self):
        _kill(_processes([self.worker_dir + os.sep, self.head_dir + os.sep], self.port))


@pytest.fixture(scope="module")
def cluster():
    # a short folder: Ray's socket paths live under it (Unix sockets allow ~107 characters)
    base = tempfile.mkdtemp(prefix="lvray")
    c = Cluster(base)
    try:
        c.start_head()
        c.start_worker()
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return synthetic.make_scan(str(tmp_path_factory.mktemp("scan")), progress=False, **synthetic.SMALL)


def _driver(cluster, cfg_path, scan, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "lviv_c", "sweep", cfg_path, "--data", scan,
                             "--out", out, "--address", cluster.address, "--quiet"] + list(extra),
                            env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc, timeout=300):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the sweep driver did not finish in {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def _lines(out):
    path = os.path.join(out, "results.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(x) for x in fh if x.strip().endswith("}")]


def _wait(cond, timeout, what):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_failing_trial_on_ray(cluster, scan, tmp_path):
    cfg = {"model": "ln", "grid": {"data": [scan, str(tmp_path / "missing-scan")]}, "seeds": [1],
           "train": {"max_iter": 2}, "early_stop": False}
    old = dict(os.environ)
    os.environ.update(RAY_AUTH_MODE="disabled")
    try:
        recs = sweep.run(cfg, out=str(tmp_path / "s"), address=cluster.address, verbose=False)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert not ray.is_initialized()
    ok, bad = recs
    assert ok["status"] == "ok" and ok["runner"] == "ray"
    assert bad["status"] == "error" and "missing-scan" in bad["error"] and bad["runner"] == "ray"
    assert len(_lines(str(tmp_path / "s"))) == 2


def test_killed_driver_rerun_skips_finished(cluster, scan, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG))
    out = str(tmp_path / "s")
    proc = _driver(cluster, str(cfg), scan, out, "--workers", "1")
    try:
        _wait(lambda: len(_lines(out)) >= 1 or proc.poll() is not None, 240, "a finished trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    first = _lines(out)
    assert 1 <= len(first) < 4, "the driver finished everything before it could be killed"
    rc, log = _finish(_driver(cluster, str(cfg), scan, out))
    assert rc == 0, log
    lines = _lines(out)
    assert lines[:len(first)] == first
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)) == 4, "a finished trial was run again"
    assert all(r["status"] == "ok" for r in lines)


def test_worker_node_dies_mid_trial(cluster, scan, tmp_path):
    # other seeds than the test above, so the start lines in the worker logs are this test's
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG2))
    out = str(tmp_path / "s")
    proc = _driver(cluster, str(cfg), scan, out)
    try:
        killed = []
        expected = {t["id"] for t in sweep.expand(CFG2, scan)}

        def trial_on_worker():       # a trial's start line in a worker log of the second node
            for f in glob.glob(os.path.join(cluster.worker_dir, "session_*", "logs", "worker-*.out")):
                with open(f, errors="replace") as fh:
                    ids = re.findall(r"lviv_c sweep: trial (\w+) started", fh.read())
                ours = [i for i in ids if i in expected]
                if ours:
                    killed.append(ours[0])
                    return True
            return False
        _wait(lambda: trial_on_worker() or proc.poll() is not None, 240,
              "a trial running on the second node")
        assert proc.poll() is None, proc.communicate()[0]
        _kill(cluster.worker_node())          # the machine dies: raylet, workers, agents
        rc, log = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert rc == 0, log
    lines = _lines(out)
    assert sorted(r["id"] for r in lines) == sorted(t["id"] for t in sweep.expand(CFG2, scan))
    assert all(r["status"] == "ok" and r["runner"] == "ray" for r in lines)
    attempts = {r["id"]: r["attempts"] for r in lines}
    assert attempts[killed[0]] == 2, (attempts, killed, log)    # the killed trial ran again
    assert sorted(attempts.values()) == [1, 1, 1, 2]
    # the in-process run writes the same fields for the same trials
    # (2 epochs: the ids differ, the fields do not)
    local = sweep.run(dict(CFG2, train={"max_iter": 2}), data=scan, out=str(tmp_path / "local"),
                      use_ray=False, verbose=False)
    assert [set(r) for r in local] == [set(sweep.RECORD_FIELDS)] * 4
    assert all(set(r) == set(sweep.RECORD_FIELDS) for r in lines)
    assert [r["runner"] for r in local] == ["local"] * 4
