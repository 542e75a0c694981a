/*
 * test_body.c - a plugin for the tests only (built with WEIR_TESTS): it
 * proves the request body hook. Not in a release build's table.
 *
 *     [plugins.up]
 *     category = "test_request_body"
 *     mode = "upper"        # or "lower", or "double" (each byte twice)
 *     fail_after = 1000     # ERROR once more bytes than this went by
 *
 * "double" changes the length, so its request hook removes
 * Content-Length and the body goes up chunked.
 */
#ifdef WEIR_TEST_PLUGINS
#include <stdlib.h>
#include <string.h>

#include "app/plugin/plugins.h"

enum { M_UPPER, M_LOWER, M_DOUBLE };

typedef struct test_conf {
    int mode;
    int64_t fail_after; /* -1: never */
} test_conf;

typedef struct test_ctx {
    char *buf;
    size_t cap;
    uint64_t seen;
} test_ctx;

static bool test_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    test_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    c->fail_after = -1;
    bool has_mode;
    char *mode = weir__cfg_dup_string(ld, t, "mode", section, &has_mode);
    if (!mode || strcmp(mode, "upper") == 0)
        c->mode = M_UPPER;
    else if (strcmp(mode, "lower") == 0)
        c->mode = M_LOWER;
    else if (strcmp(mode, "double") == 0)
        c->mode = M_DOUBLE;
    else {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "mode", &e);
        weir__cfg_err_at(ld, e.line, "'mode' in [%s]: '%s' is not upper, lower or double", section,
                         mode);
    }
    free(mode);
    weir__cfg_get_int(ld, t, "fail_after", section, 0, INT64_MAX, &c->fail_after);
    *conf = c;
    return true;
}

static weir_phase_result test_request(weir_plugin_call *c)
{
    const test_conf *conf = c->plugin->conf;
    if (conf->mode == M_DOUBLE)
        weir_headers_remove(c->headers, "content-length");
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result test_body(weir_plugin_call *c, weir_str *chunk, bool end)
{
    (void)end;
    const test_conf *conf = c->plugin->conf;
    test_ctx *x = c->ctx;
    if (!x)
        return WEIR_PHASE_ERROR;
    if (c->restart) /* a retry sends the body again: count from its start */
        x->seen = 0;
    x->seen += chunk->len;
    if (conf->fail_after >= 0 && x->seen > (uint64_t)conf->fail_after)
        return WEIR_PHASE_ERROR;
    size_t out = conf->mode == M_DOUBLE ? chunk->len * 2 : chunk->len;
    if (out == 0)
        return WEIR_PHASE_CONTINUE;
    if (out > x->cap) { /* pieces are at most a read buffer: a few of these */
        if (!(x->buf = weir_session_alloc(c->s, out)))
            return WEIR_PHASE_ERROR;
        x->cap = out;
    }
    for (size_t i = 0; i < chunk->len; i++) {
        char b = chunk->ptr[i];
        if (conf->mode == M_UPPER && b >= 'a' && b <= 'z')
            b = (char)(b - 32);
        else if (conf->mode == M_LOWER && b >= 'A' && b <= 'Z')
            b = (char)(b + 32);
        if (conf->mode == M_DOUBLE) {
            x->buf[2 * i] = b;
            x->buf[2 * i + 1] = b;
        } else {
            x->buf[i] = b;
        }
    }
    *chunk = (weir_str){x->buf, out};
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_test_request_body = {
    .category = "test_request_body",
    .keys = (const weir_cfg_key[]){{"mode", WEIR_CT_STRING, NULL},
                                   {"fail_after", WEIR_CT_INTEGER, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = test_parse,
    .free = free,
    .ctx_size = sizeof(test_ctx),
    .request = test_request,
    .request_body = test_body,
};
#endif
