/*
 * ping.c - a path answered "pong" (a liveness check that reaches no
 * backend).
 *
 *     [plugins.ping]
 *     category = "ping"
 *     path = "/ping"
 */
#include <stdlib.h>
#include <string.h>

#include "app/plugin/plugins.h"

static bool ping_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    bool present;
    char *path = weir__cfg_dup_string(ld, t, "path", section, &present);
    if (!path) {
        if (!present)
            weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'path'", section);
        return false;
    }
    if (path[0] != '/') {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "path", &e);
        weir__cfg_err_at(ld, e.line, "'path' in [%s] must start with '/'", section);
    }
    *conf = path;
    return true;
}

static weir_phase_result ping_request(weir_plugin_call *c)
{
    const char *want = c->plugin->conf;
    weir_str path = weir_session_path(c->s);
    if (path.len != strlen(want) || memcmp(path.ptr, want, path.len) != 0)
        return WEIR_PHASE_CONTINUE;
    return weir__plugin_respond_text(c->s, 200, "pong", 4);
}

const weir_plugin_def weir__plugin_ping = {
    .category = "ping",
    .keys = (const char *const[]){"path", NULL},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_EARLY_REQUEST,
    .parse = ping_parse,
    .free = free,
    .request = ping_request,
};
