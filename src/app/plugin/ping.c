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
    .keys = (const weir_cfg_key[]){{"path", WEIR_CT_STRING, NULL}, {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_EARLY_REQUEST,
    .parse = weir__plugin_parse_path,
    .free = free,
    .request = ping_request,
};
