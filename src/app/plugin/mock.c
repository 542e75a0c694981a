/*
 * mock.c - answers with a fixed status, headers and body, optionally after
 * a delay (a session timer: the worker goes on serving meanwhile), and
 * optionally only for one path.
 *
 *     [plugins.down]
 *     category = "mock"
 *     status = 503
 *     headers = ["Retry-After: 30"]
 *     data = "down for maintenance"
 *     path = "/api/old"     # only this path (all paths without it)
 *     delay = "200ms"
 */
#include <stdlib.h>
#include <string.h>

#include "app/plugin/plugins.h"

typedef struct mock_conf {
    int status;
    weir_cfg_headers headers;
    char *data;
    size_t data_len;
    char *path;
    uint32_t delay_ms;
} mock_conf;

static void mock_free(void *conf)
{
    mock_conf *m = conf;
    weir__cfg_free_headers(&m->headers);
    free(m->data);
    free(m->path);
    free(m);
}

static bool mock_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    mock_conf *m = calloc(1, sizeof(*m));
    if (!m)
        return false;
    *conf = m;
    m->status = 200;
    int64_t v;
    if (weir__cfg_get_int(ld, t, "status", section, 200, 599, &v)) /* 1xx is not final */
        m->status = (int)v;
    weir__cfg_load_headers(ld, t, "headers", section, true, false, &m->headers);
    if (m->headers.n > 31) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "headers", &e);
        weir__cfg_err_at(ld, e.line, "'headers' in [%s]: at most 31", section);
    }
    bool present;
    m->data = weir__cfg_dup_string(ld, t, "data", section, &present);
    m->data_len = m->data ? strlen(m->data) : 0;
    m->path = weir__cfg_dup_string(ld, t, "path", section, &present);
    if (m->path && m->path[0] != '/') { /* "" or "api": it would never answer */
        weir_toml_entry e;
        weir__cfg_entry_of(t, "path", &e);
        weir__cfg_err_at(ld, e.line, "'path' in [%s] must start with '/'", section);
    }
    weir__cfg_get_duration(ld, t, "delay", section, 60000, true, &m->delay_ms);
    return true;
}

static weir_phase_result answer(weir_session *s, const mock_conf *m)
{
    weir_header h[32];
    size_t n = 0;
    bool has_type = false;
    for (size_t i = 0; i < m->headers.n && n < 31; i++) {
        const weir_cfg_header *e = &m->headers.v[i];
        h[n++] = (weir_header){{e->name, strlen(e->name)}, {e->value, strlen(e->value)}};
        has_type |= strcasecmp(e->name, "content-type") == 0;
    }
    if (!has_type)
        h[n++] = (weir_header){WEIR_STR("Content-Type"), WEIR_STR("text/plain; charset=utf-8")};
    if (weir_session_respond(s, m->status, h, n, m->data ? m->data : "", m->data_len) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static void delayed(weir_session *s, void *ctx)
{
    const weir_plugin *p = weir__plugin_parked(s);
    weir__plugin_resume(s, p ? answer(s, p->conf) : WEIR_PHASE_ERROR);
}

static weir_phase_result mock_request(weir_plugin_call *c)
{
    const mock_conf *m = c->plugin->conf;
    if (m->path) {
        weir_str path = weir_session_path(c->s);
        if (path.len != strlen(m->path) || memcmp(path.ptr, m->path, path.len) != 0)
            return WEIR_PHASE_CONTINUE;
    }
    if (m->delay_ms) {
        weir_session_set_timer(c->s, m->delay_ms, delayed);
        return WEIR_PHASE_PENDING;
    }
    return answer(c->s, m);
}

const weir_plugin_def weir__plugin_mock = {
    .category = "mock",
    .keys = (const weir_cfg_key[]){{"status", WEIR_CT_INTEGER, NULL},
                                   {"headers", WEIR_CT_STRINGS, NULL},
                                   {"data", WEIR_CT_STRING, NULL},
                                   {"path", WEIR_CT_STRING, NULL},
                                   {"delay", WEIR_CT_DURATION, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = mock_parse,
    .free = mock_free,
    .request = mock_request,
};
