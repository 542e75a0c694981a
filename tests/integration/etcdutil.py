"""A real etcd (Debian's etcd-server) on loopback for the tests: one
member or a cluster of three, each member stoppable, killable and
restartable on the same ports and data."""
import os
import shutil
import signal
import subprocess
import time
import urllib.request

from conftest import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


class Member:
    def __init__(self, name, data_dir, client_port, peer_port):
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc = None
        self.log = None

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port


class Etcd:
    """Etcd(tmp_path, members=1): start() -> self; url(prefix) for weir."""

    def __init__(self, tmp_path, members=1):
        self.dir = str(tmp_path)
        self.members = []
        for i in range(members):
            self.members.append(Member("m%d" % i, os.path.join(self.dir, "etcd-m%d" % i),
                                       free_port(), free_port()))
        self.cluster = ",".join("%s=http://127.0.0.1:%d" % (m.name, m.peer_port)
                                for m in self.members)

    def _start(self, m, state):
        m.log = open(os.path.join(self.dir, "etcd-%s.log" % m.name), "ab")
        argv = [ETCD, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", "http://127.0.0.1:%d" % m.client_port,
                "--advertise-client-urls", "http://127.0.0.1:%d" % m.client_port,
                "--listen-peer-urls", "http://127.0.0.1:%d" % m.peer_port,
                "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % m.peer_port,
                "--initial-cluster", self.cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", "weir-test",
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-level", "warn"]
        m.proc = subprocess.Popen(argv, stdout=m.log, stderr=m.log, stdin=subprocess.DEVNULL)

    def start(self):
        for m in self.members:
            self._start(m, "new")
        for m in self.members:
            self.wait_ready(m)
        return self

    def wait_ready(self, m, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if m.proc.poll() is not None:
                raise RuntimeError("etcd %s exited: see %s" % (m.name, self.dir))
            try:
                with urllib.request.urlopen("http://%s/health" % m.endpoint, timeout=1) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("etcd %s not healthy in %d s" % (m.name, timeout))

    def endpoints(self, members=None):
        return ",".join(m.endpoint for m in (members or self.members))

    def url(self, prefix, members=None, query=""):
        return "etcd://%s/%s%s" % (self.endpoints(members), prefix, query)

    def stop(self, m=None, sig=signal.SIGTERM):
        for x in ([m] if m else self.members):
            if x.proc and x.proc.poll() is None:
                x.proc.send_signal(sig)
                try:
                    x.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    x.proc.kill()
                    x.proc.wait(timeout=5)
            if x.log:
                x.log.close()
                x.log = None
        rest = [x for x in self.members if x.proc and x.proc.poll() is None]
        if m and len(rest) * 2 > len(self.members):
            self.wait_leader(rest)

    def kill(self, m):
        self.stop(m, signal.SIGKILL)

    def restart(self, m=None):
        for x in ([m] if m else self.members):
            self._start(x, "existing")
        for x in ([m] if m else self.members):
            self.wait_ready(x)

    def ctl(self, *args, members=None, input=None, check=True):
        env = dict(os.environ, ETCDCTL_API="3")
        r = subprocess.run([ETCDCTL, "--endpoints", self.endpoints(members),
                            "--dial-timeout", "3s", "--command-timeout", "5s"] + list(args),
                           input=input, capture_output=True, env=env, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError("etcdctl %s: %s" % (" ".join(args), r.stderr.decode()))
        return r.stdout.decode()

    TRANSIENT = ("leader changed", "no leader", "context deadline exceeded",
                 "request timed out")

    def put(self, key, value, members=None):
        """etcdctl put KEY (the value from stdin). Retried while the
        cluster is between leaders (etcd fails a proposal whose leader
        changed); a value put twice is the same value."""
        deadline = time.time() + 30
        while True:
            try:
                self.ctl("put", key, input=value.encode(), members=members)
                return
            except RuntimeError as e:
                if time.time() > deadline or not any(t in str(e) for t in self.TRANSIENT):
                    raise
            time.sleep(0.1)

    def get(self, key, members=None):
        out = self.ctl("get", key, "--print-value-only", members=members)
        return out[:-1] if out.endswith("\n") else out

    def wait_leader(self, members=None, timeout=30):
        """Until every member of members agrees on a leader among them: a
        write proposed during an election waits out etcd's request timeout
        instead of failing fast, so the tests wait for the election to end."""
        import json
        live = members or self.members
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.ctl("endpoint", "status", "-w", "json", members=live, check=False)
            try:
                st = [e["Status"] for e in json.loads(r)]
            except ValueError:
                st = []
            # Mid-election a member reports no leader (0, left out of the JSON).
            ids = {s["header"].get("member_id") for s in st}
            leaders = {s.get("leader", 0) for s in st}
            if len(st) == len(live) and len(leaders) == 1 and 0 not in leaders and \
                    leaders <= ids:
                return
            time.sleep(0.1)
        raise RuntimeError("etcd: no leader among %s in %d s" % (self.endpoints(live), timeout))

    def revision(self):
        import json
        out = self.ctl("endpoint", "status", "-w", "json")
        return max(int(e["Status"]["header"]["revision"]) for e in json.loads(out))

    def close(self):
        self.stop()
