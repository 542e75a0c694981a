"""TOML 1.0 conformance: the toml-test suite against tests/tools/toml-test-decoder.

Every case listed in ../shared/toml-test/tests/files-toml-1.0.0 (relative to
the repo root) is one test: valid/*.toml must decode to exactly the value of
its .json twin, invalid/*.toml must be rejected with a positioned error
message. The decoder runs once per case, all cases at once on a small thread
pool, and the tests only check the cached results, so the module stays fast.
"""
import concurrent.futures
import datetime
import fractions
import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
SUITE = REPO.parent / "shared" / "toml-test" / "tests"
LISTING = SUITE / "files-toml-1.0.0"
BUILD = Path(os.environ.get("WEIR_BUILD", REPO / "build-test")).resolve()
DECODER = BUILD / "bin" / "toml-test-decoder"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
ERROR_LINE = re.compile(r"^stdin:\d+:\d+: \S")

if not LISTING.is_file():
    pytest.skip("toml-test suite not found at %s" % SUITE, allow_module_level=True)

CASES = [line.strip() for line in LISTING.read_text().splitlines()
         if line.strip().endswith(".toml")]


def run_decoder(case):
    data = (SUITE / case).read_bytes()
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    proc = subprocess.run([str(DECODER)], input=data, capture_output=True, env=env, timeout=30)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), \
        proc.stderr.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def results():
    if not os.access(DECODER, os.X_OK):
        pytest.skip("toml-test-decoder not built (looked for %s)" % DECODER)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(CASES, pool.map(run_decoder, CASES)))


# ---- comparing tagged JSON ----

DT = re.compile(r"^(?:(\d{4})-(\d{2})-(\d{2}))?(?:[Tt ]?(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?"
                r"([Zz]|[+-]\d{2}:\d{2})?$")


def datetime_key(kind, text):
    """A comparable form of a date/time: an instant for offset date-times,
    the normalized fields for local ones."""
    m = DT.match(text)
    if not m:
        raise ValueError("bad %s %r" % (kind, text))
    y, mo, d, h, mi, s, frac, off = m.groups()
    f = fractions.Fraction(int(frac), 10 ** len(frac)) if frac else fractions.Fraction(0)
    date = (int(y), int(mo), int(d)) if y else None
    time = (int(h), int(mi), int(s), f) if h else None
    if kind != "datetime":
        return (date, time)
    minutes = 0
    if off and off not in "Zz":
        minutes = (int(off[1:3]) * 60 + int(off[4:6])) * (-1 if off[0] == "-" else 1)
    days = datetime.date(*date).toordinal()
    return days * 86400 + time[0] * 3600 + time[1] * 60 + time[2] - minutes * 60 + time[3]


def to_float(text):
    t = text.lstrip("+")
    if t in ("nan", "-nan"):
        return math.nan
    return float(t.replace("_", ""))


def is_scalar(x):
    return isinstance(x, dict) and set(x) == {"type", "value"} and isinstance(x["value"], str)


def compare(want, got, path="$"):
    """Returns None when equal, else a sentence saying where they differ."""
    if is_scalar(want):
        if not is_scalar(got):
            return "%s: expected a %s scalar, got %r" % (path, want["type"], got)
        kind, a, b = want["type"], want["value"], got["value"]
        if got["type"] != kind:
            return "%s: expected type %s, got %s" % (path, kind, got["type"])
        try:
            if kind == "integer":
                same = int(a) == int(b)
            elif kind == "float":
                fa, fb = to_float(a), to_float(b)
                same = (math.isnan(fa) and math.isnan(fb)) or fa == fb
            elif kind in ("datetime", "datetime-local", "date-local", "time-local"):
                same = datetime_key(kind, a) == datetime_key(kind, b)
            else:
                same = a == b
        except ValueError as e:
            return "%s: %s" % (path, e)
        return None if same else "%s: expected %s %r, got %r" % (path, kind, a, b)
    if isinstance(want, dict):
        if not isinstance(got, dict) or is_scalar(got):
            return "%s: expected a table, got %r" % (path, got)
        if set(want) != set(got):
            return "%s: keys differ: expected %s, got %s" % (path, sorted(want), sorted(got))
        for k in want:
            diff = compare(want[k], got[k], "%s.%s" % (path, k))
            if diff:
                return diff
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return "%s: expected an array of %d, got %r" % (path, len(want), got)
        for i, (w, g) in enumerate(zip(want, got)):
            diff = compare(w, g, "%s[%d]" % (path, i))
            if diff:
                return diff
        return None
    return "%s: unexpected expected-value %r" % (path, want)


@pytest.mark.parametrize("case", CASES)
def test_toml_case(case, results):
    rc, out, err = results[case]
    assert not any(m in err for m in SANITIZER_MARKS), "sanitizer report:\n" + err
    if case.startswith("valid/"):
        assert rc == 0, "rejected a valid document: %s" % err.strip()
        want = json.loads((SUITE / case).with_suffix(".json").read_text(encoding="utf-8"))
        got = json.loads(out)
        diff = compare(want, got)
        assert diff is None, diff
    else:
        assert rc == 1, "accepted an invalid document (exit %d): %s" % (rc, out[:300])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ERROR_LINE.match(lines[0]), "bad error output: %r" % err
