"""Active health checks of a TLS upstream go over TLS, as its requests do:
an HTTPS-only backend is checked healthy, one whose certificate fails
verification is found unhealthy with the TLS reason logged."""
import time

import pytest

import tlsutil as T
from conftest import binary, free_port, require_binary


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return T.PKI(tmp_path_factory.mktemp("pki"))


def wait_log(proc, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.stderr():
            return True
        time.sleep(0.05)
    return False


def https_backend(start_proc, tmp_path, pki, cert):
    port = free_port()
    cfg = tmp_path / ("back-%s.toml" % cert)
    cfg.write_text('[certificates.c]\ncert = "%s"\nkey = "%s"\n'
                   '[servers.b]\naddr = "127.0.0.1:%d"\nlocations = ["e"]\ncertificates = ["c"]\n'
                   'access_log = "combined"\naccess_log_file = "%s"\n'
                   '[locations.e]\necho = true\n'
                   % (pki.path(cert + ".crt"), pki.path(cert + ".key"), port,
                      tmp_path / ("back-%s.log" % cert)))
    start_proc([binary("weir"), "-c", str(cfg), "--threads", "1"], port, "back-" + cert)
    return port, tmp_path / ("back-%s.log" % cert)


@pytest.mark.parametrize("cert,healthy", [("localhost", True), ("expired", False)],
                         ids=["valid-cert", "expired-cert"])
def test_http_check_over_tls(start_proc, tmp_path, pki, cert, healthy):
    require_binary("weir")
    back, log = https_backend(start_proc, tmp_path, pki, cert)
    front = free_port()
    cfg = tmp_path / "front.toml"
    cfg.write_text('[servers.f]\naddr = "127.0.0.1:%d"\nlocations = ["p"]\n'
                   '[locations.p]\nupstream = "b"\n'
                   '[upstreams.b]\naddrs = ["127.0.0.1:%d"]\ntls = true\nsni = "localhost"\n'
                   'ca_file = "%s"\nhealth_check = "http:///"\nhealth_check_interval = "100ms"\n'
                   'health_check_fall = 1\nhealth_check_rise = 1\n'
                   % (front, back, pki.path("ca.crt")))
    w = start_proc([binary("weir"), "-c", str(cfg), "--threads", "1"], front, "front")
    if healthy:
        # Three checks answered over TLS, and none failed.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count("weir-health-check") >= 3:
                break
            time.sleep(0.05)
        assert log.read_text().count("weir-health-check") >= 3
        assert "unhealthy" not in w.stderr(), w.stderr()
    else:
        assert wait_log(w, "is unhealthy"), w.stderr()
        assert "TLS handshake failed: certificate verify failed" in w.stderr(), w.stderr()
