/*
 * cors.c - cross-origin resource sharing: answers preflight requests
 * itself and adds the Access-Control-* fields to the responses of the
 * origins it allows.
 *
 *     [plugins.cors]
 *     category = "cors"
 *     allow_origins = ["https://app.example.com", "~^https://[a-z]+\\.example\\.com$"]
 *     allow_methods = "GET, POST, PUT, DELETE"
 *     allow_headers = "Content-Type, Authorization"   # default: what the preflight asks
 *     allow_credentials = true
 *     expose_headers = "X-Request-Id"
 *     max_age = "1h"
 *
 * An origin entry is exact, a wildcard or a regex ("~..."); "*" allows
 * every origin (answered as "*", or as the origin itself with
 * credentials, which browsers require) except "null", which must be
 * listed by name. A preflight (OPTIONS with Origin
 * and Access-Control-Request-Method) is answered 204 for an allowed
 * origin and 403 for another; other requests from an origin not allowed
 * pass without CORS fields (the browser then refuses the response to the
 * page). Every response of a request with an Origin says Vary: Origin.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/match.h"
#include "app/plugin/plugins.h"

typedef struct cors_conf {
    weir_patterns *origins;
    bool any;         /* "*" is listed */
    bool null_listed; /* "null" is listed, by name */
    char *methods;
    char *headers; /* NULL: echo Access-Control-Request-Headers */
    bool credentials;
    char *expose;
    uint32_t max_age_s;
} cors_conf;

typedef struct cors_ctx {
    weir_str origin; /* allowed origin of this request, or .ptr NULL */
} cors_ctx;

static void cors_free(void *conf)
{
    cors_conf *c = conf;
    weir__patterns_free(c->origins);
    free(c->methods);
    free(c->headers);
    free(c->expose);
    free(c);
}

static bool cors_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    cors_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    bool present;
    size_t n = 0;
    int line = 0;
    char **list = weir__cfg_get_string_list(ld, t, "allow_origins", section, &n, &line);
    for (size_t i = 0; list && i < n; i++) {
        c->any |= strcmp(list[i], "*") == 0;
        c->null_listed |= strcasecmp(list[i], "null") == 0;
    }
    weir__cfg_free_list(list, n);
    /* Loaded even beside "*", so that a bad regex there is an error too. */
    c->origins = weir__patterns_load(ld, t, "allow_origins", section, &present);
    if (!list && !weir__cfg_entry_of(t, "allow_origins", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'allow_origins'", section);
    c->methods = weir__cfg_dup_string(ld, t, "allow_methods", section, &present);
    c->headers = weir__cfg_dup_string(ld, t, "allow_headers", section, &present);
    c->expose = weir__cfg_dup_string(ld, t, "expose_headers", section, &present);
    weir__cfg_get_bool(ld, t, "allow_credentials", section, &c->credentials);
    uint32_t ms = 0;
    if (weir__cfg_get_duration(ld, t, "max_age", section, 86400000u * 7, true, &ms))
        c->max_age_s = ms / 1000;
    const char *fields[] = {c->methods, c->headers, c->expose};
    const char *names[] = {"allow_methods", "allow_headers", "expose_headers"};
    for (int i = 0; i < 3; i++) {
        for (const char *p = fields[i]; p && *p; p++) {
            if ((unsigned char)*p < 0x20) {
                weir_toml_entry e;
                weir__cfg_entry_of(t, names[i], &e);
                weir__cfg_err_at(ld, e.line, "'%s' in [%s]: control character", names[i], section);
                break;
            }
        }
    }
    return true;
}

/* "null" (a sandboxed frame, a file, a redirect) is allowed only when
 * listed itself: neither "*" nor a wildcard or regex covers it, or any
 * page could reach a credentialed API through a sandboxed iframe. */
static bool allowed(const cors_conf *c, weir_str origin)
{
    if (origin.len == 4 && strncasecmp(origin.ptr, "null", 4) == 0)
        return c->null_listed;
    return c->any || weir__patterns_match(c->origins, origin, false);
}

static weir_str cstr(weir_session *s, weir_str v)
{
    char *p = weir_session_alloc(s, v.len + 1);
    if (!p)
        return WEIR_STR_NULL;
    memcpy(p, v.ptr, v.len);
    p[v.len] = '\0';
    return (weir_str){p, v.len};
}

/* The Access-Control-Allow-Origin value. */
static weir_str allow_origin(const cors_conf *c, weir_str origin)
{
    return c->any && !c->credentials ? WEIR_STR("*") : origin;
}

static weir_phase_result cors_request(weir_plugin_call *call)
{
    const cors_conf *c = call->plugin->conf;
    weir_session *s = call->s;
    weir_headers *rq = weir_session_req_headers(s);
    weir_str origin = weir_headers_get(rq, "origin");
    if (!origin.ptr)
        return WEIR_PHASE_CONTINUE; /* not a cross-origin request */
    weir_str m = weir_session_method(s);
    bool preflight = m.len == 7 && memcmp(m.ptr, "OPTIONS", 7) == 0 &&
                     weir_headers_get(rq, "access-control-request-method").ptr;
    bool ok = allowed(c, origin);
    if (!preflight) {
        if (ok)
            ((cors_ctx *)call->ctx)->origin = cstr(s, origin);
        return WEIR_PHASE_CONTINUE;
    }
    if (!ok) {
        weir_header h = {WEIR_STR("Vary"), WEIR_STR("Origin")};
        static const char body[] = "403 origin not allowed\n";
        if (weir_session_respond(s, 403, &h, 1, body, sizeof(body) - 1) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        return WEIR_PHASE_ANSWERED;
    }
    weir_header h[8];
    size_t n = 0;
    weir_str o = cstr(s, allow_origin(c, origin));
    h[n++] = (weir_header){WEIR_STR("Access-Control-Allow-Origin"), o};
    h[n++] = (weir_header){WEIR_STR("Access-Control-Allow-Methods"),
                           c->methods ? (weir_str){c->methods, strlen(c->methods)}
                                      : WEIR_STR("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")};
    weir_str want = weir_headers_get(rq, "access-control-request-headers");
    if (c->headers)
        h[n++] = (weir_header){WEIR_STR("Access-Control-Allow-Headers"),
                               {c->headers, strlen(c->headers)}};
    else if (want.ptr)
        h[n++] = (weir_header){WEIR_STR("Access-Control-Allow-Headers"), cstr(s, want)};
    if (c->credentials)
        h[n++] = (weir_header){WEIR_STR("Access-Control-Allow-Credentials"), WEIR_STR("true")};
    char age[16];
    if (c->max_age_s) {
        snprintf(age, sizeof(age), "%u", c->max_age_s);
        h[n++] = (weir_header){WEIR_STR("Access-Control-Max-Age"), {age, strlen(age)}};
    }
    h[n++] = (weir_header){WEIR_STR("Vary"), WEIR_STR("Origin, Access-Control-Request-Method, "
                                                      "Access-Control-Request-Headers")};
    if (!o.ptr || weir_session_respond(s, 204, h, n, NULL, 0) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* Appends "Origin" to Vary unless it is there (or Vary is "*"). */
static void vary_origin(weir_headers *h)
{
    weir_str v = weir_headers_get(h, "vary");
    if (!v.ptr) {
        weir_headers_set(h, "Vary", "Origin");
        return;
    }
    for (size_t i = 0; i + 6 <= v.len; i++) {
        if (strncasecmp(v.ptr + i, "origin", 6) == 0)
            return;
    }
    if (v.len == 1 && v.ptr[0] == '*')
        return;
    weir_headers_add(h, "Vary", "Origin");
}

static weir_phase_result cors_response(weir_plugin_call *call)
{
    const cors_conf *c = call->plugin->conf;
    cors_ctx *x = call->ctx;
    weir_session *s = call->s;
    weir_headers *h = weir_session_resp_headers(s);
    if (!weir_headers_get(weir_session_req_headers(s), "origin").ptr)
        return WEIR_PHASE_CONTINUE;
    vary_origin(h);
    if (!x || !x->origin.ptr)
        return WEIR_PHASE_CONTINUE;
    /* The backend's own CORS fields would contradict ours. */
    weir_headers_remove(h, "access-control-allow-origin");
    weir_headers_remove(h, "access-control-allow-credentials");
    weir_str o = allow_origin(c, x->origin);
    weir_headers_set(h, "Access-Control-Allow-Origin", o.ptr);
    if (c->credentials)
        weir_headers_set(h, "Access-Control-Allow-Credentials", "true");
    if (c->expose)
        weir_headers_set(h, "Access-Control-Expose-Headers", c->expose);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_cors = {
    .category = "cors",
    .keys = (const weir_cfg_key[]){{"allow_origins", WEIR_CT_STRINGS, NULL},
                                   {"allow_methods", WEIR_CT_STRING, NULL},
                                   {"allow_headers", WEIR_CT_STRING, NULL},
                                   {"allow_credentials", WEIR_CT_BOOLEAN, NULL},
                                   {"expose_headers", WEIR_CT_STRING, NULL},
                                   {"max_age", WEIR_CT_DURATION, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEP_BIT(WEIR_STEP_EARLY_REQUEST) | WEIR_STEP_BIT(WEIR_STEP_REQUEST),
    .default_step = WEIR_STEP_REQUEST,
    .parse = cors_parse,
    .free = cors_free,
    .ctx_size = sizeof(cors_ctx),
    .request = cors_request,
    .response = cors_response,
};
