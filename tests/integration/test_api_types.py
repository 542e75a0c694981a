"""Phase results and I/O codes are distinct types: each mix-up the C API
can be misused with must fail to compile with weir's warning flags, and the
correct forms must compile (so a failure is the mix-up, not the harness).
GCC is the compiler weir builds with; clang spells two of the checks
differently (docs/c-api.md)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = ["-std=gnu11", "-Wall", "-Wextra", "-Werror=enum-conversion", "-Werror=enum-compare",
         "-Werror=incompatible-pointer-types"]

PRELUDE = """
#include <weir/weir.h>
static weir_phase_result ok_peer(weir_session *s, void *ctx, weir_peer *p)
{ return WEIR_PHASE_CONTINUE; }
"""


def compile_c(tmp_path, body):
    src = tmp_path / "t.c"
    src.write_text(PRELUDE + body)
    r = subprocess.run(["gcc", *FLAGS, "-I", os.path.join(ROOT, "include"), "-c", str(src), "-o",
                        str(tmp_path / "t.o")], capture_output=True, text=True)
    return r.returncode, r.stderr


CORRECT = """
static weir_phase_result filter(weir_session *s, void *ctx)
{
    if (weir_session_respond(s, 204, NULL, 0, NULL, 0) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}
const weir_proxy_ops ops = {.request_filter = filter, .upstream_peer = ok_peer};
"""

MIXUPS = {
    "io_code_returned_from_a_phase": (
        "static weir_phase_result f(weir_session *s, void *c) { return WEIR_AGAIN; }\n"
        "const weir_proxy_ops ops = {.request_filter = f, .upstream_peer = ok_peer};\n",
        "enum-conversion"),
    "phase_result_compared_with_an_io_code": (
        "int f(weir_session *s) { return ok_peer(s, 0, 0) == WEIR_DONE; }\n",
        "enum-compare"),
    "phase_declared_to_return_int": (
        "static int f(weir_session *s, void *c) { return WEIR_PHASE_CONTINUE; }\n"
        "const weir_proxy_ops ops = {.request_filter = f, .upstream_peer = ok_peer};\n",
        "incompatible-pointer-types"),
    "body_filter_declared_to_return_int": (
        "static int f(weir_session *s, void *c, weir_str *b, bool end) { return 0; }\n"
        "const weir_proxy_ops ops = {.response_body_filter = f, .upstream_peer = ok_peer};\n",
        "incompatible-pointer-types"),
    "io_code_passed_to_resume": (
        "void f(weir_session *s) { weir_session_resume(s, WEIR_OK); }\n",
        "enum-conversion"),
}


def test_correct_phases_compile(tmp_path):
    rc, err = compile_c(tmp_path, CORRECT)
    assert rc == 0, err


@pytest.mark.parametrize("name", sorted(MIXUPS))
def test_mixup_is_a_compile_error(tmp_path, name):
    body, flag = MIXUPS[name]
    rc, err = compile_c(tmp_path, body)
    assert rc != 0, "%s compiled" % name
    assert flag in err, err
