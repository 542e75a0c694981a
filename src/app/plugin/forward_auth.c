/*
 * forward_auth.c - asks an auth service about each request (Traefik's
 * forwardAuth, nginx's auth_request, APISIX's forward-auth).
 *
 *     [plugins.auth]
 *     category = "forward_auth"
 *     auth_url = "http://127.0.0.1:9091/verify"   # or https://, a name or an IP
 *     auth_request_headers = ["Authorization", "Cookie"]  # default: all
 *     auth_response_headers = ["X-User", "X-Groups"]
 *     timeout = "5s"
 *     ca_file = "/etc/ssl/auth-ca.pem"            # https: else the system's
 *
 * A GET to auth_url (a sub-request, weir/subrequest.h: kept-alive
 * connections, the worker not blocked) carries the client's fields (all
 * end-to-end ones, or only those listed) and what weir decided about the
 * request: X-Forwarded-Method, -Proto, -Host, -Uri and -For. Fields of
 * those names the client sent are not passed on.
 *
 * A 2xx lets the request through: each field of auth_response_headers is
 * taken off the request first (a client cannot claim "X-User: admin"),
 * then set from the answer when it has it. Any other status goes back to
 * the client as the service gave it (its fields but the hop-by-hop and
 * framing ones, its body): 401 with WWW-Authenticate, a 302 to a login
 * page. No answer within timeout, or none at all, is a 503.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/plugins.h"

#define MAX_AUTH_BODY (64 * 1024)

typedef struct fa_conf {
    weir_plugin_url url; /* auth_url */
    char **req_names, **resp_names;
    size_t n_req, n_resp;
    uint32_t timeout_ms;
} fa_conf;

static void fa_free(void *conf)
{
    fa_conf *c = conf;
    weir__plugin_url_free(&c->url);
    weir__cfg_free_list(c->req_names, c->n_req);
    weir__cfg_free_list(c->resp_names, c->n_resp);
    free(c);
}

/* Fields weir writes itself on the sub-request, whatever the client sent. */
static const char *const own_fields[] = {"x-forwarded-method", "x-forwarded-proto",
                                         "x-forwarded-host",   "x-forwarded-uri",
                                         "x-forwarded-for",    NULL};

static bool in_list(const char *const *list, weir_str name)
{
    for (size_t i = 0; list[i]; i++) {
        if (strlen(list[i]) == name.len && strncasecmp(list[i], name.ptr, name.len) == 0)
            return true;
    }
    return false;
}

/* Hop-by-hop and framing fields: neither sent to the service nor copied
 * from its answer. */
static bool not_passed(weir_str name)
{
    static const char *const names[] = {
        "connection", "keep-alive",     "proxy-connection",  "te",     "trailer", "upgrade",
        "host",       "content-length", "transfer-encoding", "expect", NULL};
    return in_list(names, name);
}

static bool fa_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    fa_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    int line = weir_toml_line(t);
    if (!weir__plugin_url(ld, t, "auth_url", section, &c->url))
        weir__cfg_err_at(ld, line, "[%s] needs 'auth_url', the auth service to ask", section);
    c->req_names =
        weir__cfg_get_string_list(ld, t, "auth_request_headers", section, &c->n_req, &line);
    c->resp_names =
        weir__cfg_get_string_list(ld, t, "auth_response_headers", section, &c->n_resp, &line);
    for (size_t i = 0; i < c->n_req; i++) {
        if (!weir__cfg_valid_token(c->req_names[i]))
            weir__cfg_err_at(ld, line, "'auth_request_headers' in [%s]: '%s' is not a field name",
                             section, c->req_names[i]);
    }
    for (size_t i = 0; i < c->n_resp; i++) {
        const char *why = weir__cfg_forbidden_field(c->resp_names[i], true);
        if (!weir__cfg_valid_token(c->resp_names[i]))
            weir__cfg_err_at(ld, line, "'auth_response_headers' in [%s]: '%s' is not a field name",
                             section, c->resp_names[i]);
        else if (why)
            weir__cfg_err_at(ld, line, "'auth_response_headers' in [%s]: '%s' is %s", section,
                             c->resp_names[i], why);
    }
    c->timeout_ms = 5000;
    weir__cfg_get_duration(ld, t, "timeout", section, 600000, false, &c->timeout_ms);
    c->url.peer.connect_timeout_ms = c->timeout_ms;
    return true;
}

/* ---- per request ---- */

static bool listed(char *const *names, size_t n, weir_str name)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(names[i]) == name.len && strncasecmp(names[i], name.ptr, name.len) == 0)
            return true;
    }
    return false;
}

/* A NUL-terminated copy in session memory, or NULL. */
static char *sdup(weir_session *s, weir_str v)
{
    char *p = weir_session_alloc(s, v.len + 1);
    if (p) {
        memcpy(p, v.ptr, v.len);
        p[v.len] = '\0';
    }
    return p;
}

static void answered(weir_session *s, void *arg, const weir_subrequest_result *r)
{
    const fa_conf *c = arg;
    if (r->error_code == WEIR_SUBREQ_CANCELLED) {
        weir__plugin_resume(s, WEIR_PHASE_ERROR); /* the client left: the session ends */
        return;
    }
    if (r->error_code != WEIR_SUBREQ_OK) {
        weir_log(WEIR_LEVEL_WARN, "forward_auth: %s %s: %s: 503", c->url.authority, c->url.target,
                 r->error);
        static const char body[] = "503 Service Unavailable (auth service)\n";
        weir__plugin_resume(s, weir__plugin_respond_text(s, 503, body, sizeof(body) - 1));
        return;
    }
    if (r->status >= 200 && r->status < 300) {
        weir_headers *h = weir_session_req_headers(s);
        for (size_t i = 0; i < c->n_resp; i++) {
            const weir_str *v = weir_subrequest_header(r, c->resp_names[i]);
            char *val = v ? sdup(s, *v) : NULL;
            if (v && (!val || weir_headers_set(h, c->resp_names[i], val) != WEIR_OK)) {
                weir__plugin_resume(s, WEIR_PHASE_ERROR);
                return;
            }
        }
        weir__plugin_resume(s, WEIR_PHASE_CONTINUE);
        return;
    }
    /* The service's answer, as it gave it. */
    weir_header *hs = weir_session_alloc(s, (r->n_headers ? r->n_headers : 1) * sizeof(*hs));
    size_t n = 0;
    for (size_t i = 0; hs && i < r->n_headers; i++) {
        if (not_passed(r->headers[i].name))
            continue;
        char *name = sdup(s, r->headers[i].name), *val = sdup(s, r->headers[i].value);
        if (!name || !val) {
            hs = NULL;
            break;
        }
        hs[n++] = (weir_header){{name, r->headers[i].name.len}, {val, r->headers[i].value.len}};
    }
    int status = r->status < 200 ? 502 : r->status; /* a 1xx or 101 is not an answer */
    if (!hs || weir_session_respond(s, status, hs, n, r->body.ptr, r->body.len) != WEIR_OK) {
        weir__plugin_resume(s, WEIR_PHASE_ERROR);
        return;
    }
    weir__plugin_resume(s, WEIR_PHASE_ANSWERED);
}

static weir_phase_result fa_request(weir_plugin_call *call)
{
    const fa_conf *c = call->plugin->conf;
    weir_session *s = call->s;
    weir_headers *h = weir_session_req_headers(s);
    size_t nh = weir_headers_count(h);
    weir_header *out = weir_session_alloc(s, (nh + 5) * sizeof(*out));
    if (!out)
        return WEIR_PHASE_ERROR;
    size_t n = 0;
    for (size_t i = 0; i < nh; i++) {
        weir_header f = weir_headers_at(h, i);
        if (not_passed(f.name) || in_list(own_fields, f.name))
            continue;
        if (c->n_req && !listed(c->req_names, c->n_req, f.name))
            continue;
        out[n++] = f;
    }
    weir_tls_info tls;
    bool https = weir_session_tls(s, &tls);
    weir_str host = weir_headers_get(h, "host");
    out[n++] = (weir_header){WEIR_STR("X-Forwarded-Method"), weir_session_method(s)};
    out[n++] =
        (weir_header){WEIR_STR("X-Forwarded-Proto"), https ? WEIR_STR("https") : WEIR_STR("http")};
    if (host.ptr)
        out[n++] = (weir_header){WEIR_STR("X-Forwarded-Host"), host};
    out[n++] = (weir_header){WEIR_STR("X-Forwarded-Uri"), weir_session_target(s)};
    out[n++] = (weir_header){WEIR_STR("X-Forwarded-For"), weir_session_client_ip(s)};
    /* What the service vouches for comes from it alone. */
    for (size_t i = 0; i < c->n_resp; i++)
        weir_headers_remove(h, c->resp_names[i]);
    weir_subrequest_spec spec = {
        .target = {c->url.target, strlen(c->url.target)},
        .authority = {c->url.authority, strlen(c->url.authority)},
        .headers = out,
        .n_headers = n,
        .max_body = MAX_AUTH_BODY,
        .timeout_ms = c->timeout_ms,
    };
    /* The conf outlives the request: its snapshot is pinned until the end. */
    if (!weir_subrequest_start(s, &c->url.peer, &spec, answered, (void *)c))
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_PENDING;
}

static const weir_cfg_key fa_keys[] = {{"auth_url", WEIR_CT_STRING, NULL},
                                       {"auth_request_headers", WEIR_CT_STRINGS, NULL},
                                       {"auth_response_headers", WEIR_CT_STRINGS, NULL},
                                       {"timeout", WEIR_CT_DURATION, NULL},
                                       {"ca_file", WEIR_CT_STRING, NULL},
                                       {NULL, 0, NULL}};

const weir_plugin_def weir__plugin_forward_auth = {
    .category = "forward_auth",
    .keys = fa_keys,
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = fa_parse,
    .free = fa_free,
    .request = fa_request,
};
