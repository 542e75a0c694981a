/*
 * builtin.c - the rules a location or a server sets with its own keys,
 * as plugins (echo, client_max_body_size, rewrite, redirect_https), and
 * the redirect category they share with [plugins.NAME] tables.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "app/plugin/plugins.h"
#include "app/route.h"

weir_plugin *weir__plugin_builtin(const weir_plugin_def *def, const char *owner, void *conf)
{
    weir_plugin *p = calloc(1, sizeof(*p));
    size_t len = strlen(def->category) + strlen(owner) + 3;
    if (p)
        p->name = malloc(len);
    if (!p || !p->name) {
        if (def->free && conf)
            def->free(conf);
        free(p);
        return NULL;
    }
    snprintf(p->name, len, "%s:%s", owner, def->category);
    p->def = def;
    p->step = def->default_step;
    p->conf = conf;
    p->builtin = true;
    return p;
}

/* ---- echo: answer "echo from ADDR: METHOD URI" (the location's echo) ---- */

static weir_phase_result echo_answer(weir_session *s, req_ctx *c)
{
    char body[600];
    weir_str m = weir_session_method(s), t = weir_session_target(s);
    const char *addr = c->srv->n_addrs ? c->srv->addrs[0] : "-";
    int n = snprintf(body, sizeof(body), "echo from %s: %.*s %.*s\n", addr, (int)m.len, m.ptr,
                     (int)(t.len > 256 ? 256 : t.len), t.ptr);
    weir_header h[] = {{WEIR_STR("Content-Type"), WEIR_STR("text/plain")},
                       {WEIR_STR("X-Echo-Upstream"), {addr, strlen(addr)}}};
    if (weir_session_respond(s, 200, h, 2, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static weir_phase_result echo_request(weir_plugin_call *c)
{
    return echo_answer(c->s, c->req);
}

static bool no_keys(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    *conf = NULL;
    return true;
}

const weir_plugin_def weir__plugin_echo = {
    .category = "echo",
    .keys = (const weir_cfg_key[]){{NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = no_keys,
    .request = echo_request,
};

/* ---- body_limit: the location's client_max_body_size ---- */

static bool body_limit_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    uint64_t size = 0;
    if (!weir__cfg_get_size(ld, t, "max_size", section, UINT64_MAX / 2, &size)) {
        if (!weir__cfg_entry_of(t, "max_size", &(weir_toml_entry){0}))
            weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'max_size'", section);
        return false;
    }
    uint64_t *v = malloc(sizeof(*v));
    if (!v)
        return false;
    *v = size;
    *conf = v;
    return true;
}

static weir_phase_result body_limit_request(weir_plugin_call *c)
{
    weir_session_set_body_limit(c->s, *(const uint64_t *)c->plugin->conf);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_body_limit = {
    .category = "body_limit",
    .keys = (const weir_cfg_key[]){{"max_size", WEIR_CT_SIZE, NULL}, {NULL, 0, NULL}},
    .steps = WEIR_STEP_BIT(WEIR_STEP_EARLY_REQUEST) | WEIR_STEP_BIT(WEIR_STEP_REQUEST),
    .default_step = WEIR_STEP_REQUEST,
    .parse = body_limit_parse,
    .free = free,
    .request = body_limit_request,
};

/* ---- rewrite: the location's rewrite (its regex and replacement) ---- */

/* Applies the location's rewrite to the normalised path; the query is
 * kept. The result is normalised again by weir_session_set_target, so a
 * capture cannot climb out of the rewritten prefix. Returns WEIR_OK,
 * WEIR_ERR_NOMEM for a result over 8 KiB, or WEIR_ERR_INVAL. */
static int rewrite(weir_session *s, const weir_cfg_location *l)
{
    weir_str path = weir_session_path(s), query = weir_session_query(s);
    char out[8192];
    PCRE2_SIZE out_len = sizeof(out);
    /* UNSET_EMPTY: an optional group that did not match is "" (as nginx). */
    int rc = pcre2_substitute(l->rewrite_re, (PCRE2_SPTR)path.ptr, path.len, 0,
                              PCRE2_SUBSTITUTE_UNSET_EMPTY, weir__thread_match_data(), NULL,
                              (PCRE2_SPTR)l->rewrite_repl, PCRE2_ZERO_TERMINATED,
                              (PCRE2_UCHAR *)out, &out_len);
    if (rc == 0)
        return WEIR_OK; /* no match: path unchanged */
    if (rc == PCRE2_ERROR_NOMEMORY || (rc > 0 && out_len + 1 + query.len >= sizeof(out)))
        return WEIR_ERR_NOMEM;
    if (rc < 0)
        return WEIR_ERR_INVAL;
    weir_str target = weir_session_target(s);
    if (memchr(target.ptr, '?', target.len)) { /* "?" alone is kept too */
        out[out_len++] = '?';
        memcpy(out + out_len, query.ptr, query.len);
        out_len += query.len;
    }
    if (out_len == 0 || out[0] != '/')
        return WEIR_ERR_INVAL;
    return weir_session_set_target(s, out, out_len);
}

static weir_phase_result rewrite_request(weir_plugin_call *c)
{
    const weir_cfg_location *l = c->plugin->conf;
    int rc = rewrite(c->s, l);
    if (rc == WEIR_OK)
        return WEIR_PHASE_CONTINUE;
    weir_str id = weir_session_request_id(c->s);
    if (rc == WEIR_ERR_NOMEM) {
        weir_log(WEIR_LEVEL_WARN, "location %s: rewritten target over 8 KiB (request %.*s)",
                 l->name, (int)id.len, id.ptr);
        return weir__app_answer(c->s, 414, "URI Too Long");
    }
    /* The captures come from the client's path: its request. */
    weir_log(WEIR_LEVEL_WARN, "location %s: the rewritten target is not a safe path (request %.*s)",
             l->name, (int)id.len, id.ptr);
    return weir__app_answer(c->s, 400, "Bad Request");
}

/* Made only from a location's `rewrite` (conf: the location). */
const weir_plugin_def weir__plugin_rewrite = {
    .category = "rewrite",
    .steps = WEIR_STEP_BIT(WEIR_STEP_REQUEST),
    .default_step = WEIR_STEP_REQUEST,
    .request = rewrite_request,
};

/* ---- redirect: to https, or under a prefix ---- */

typedef struct redirect_conf {
    bool http_to_https;
    uint32_t https_port; /* 443: none in the Location */
    char *prefix;        /* NULL: none */
    int status;
} redirect_conf;

static bool redirect_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    redirect_conf *r = calloc(1, sizeof(*r));
    if (!r)
        return false;
    r->status = 301;
    r->https_port = 443;
    bool present;
    weir__cfg_get_bool(ld, t, "http_to_https", section, &r->http_to_https);
    int64_t v;
    if (weir__cfg_get_int(ld, t, "https_port", section, 1, 65535, &v))
        r->https_port = (uint32_t)v;
    r->prefix = weir__cfg_dup_string(ld, t, "prefix", section, &present);
    weir_toml_entry e;
    bool has_status = weir__cfg_entry_of(t, "status", &e) || weir__cfg_entry_of(t, "code", &e);
    const char *key = weir__cfg_entry_of(t, "status", &e) ? "status" : "code";
    if (has_status && weir__cfg_get_int(ld, t, key, section, 300, 399, &v)) {
        if (v != 301 && v != 302 && v != 307 && v != 308)
            weir__cfg_err_at(ld, e.line, "'%s' in [%s] must be 301, 302, 307 or 308", key, section);
        r->status = (int)v;
    }
    /* "//host" or "/\\host" would send clients to another site. */
    if (r->prefix &&
        (r->prefix[0] != '/' || r->prefix[1] == '/' || strpbrk(r->prefix, "?#\\\r\n"))) {
        weir__cfg_entry_of(t, "prefix", &e);
        weir__cfg_err_at(
            ld, e.line,
            "'prefix' in [%s] must be a path starting with one '/' (no backslash, '?' or '#')",
            section);
    }
    if (!r->http_to_https && !r->prefix)
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'http_to_https' or 'prefix'", section);
    *conf = r;
    return true;
}

static void redirect_free(void *conf)
{
    redirect_conf *r = conf;
    free(r->prefix);
    free(r);
}

void *weir__plugin_redirect_https(uint32_t https_port)
{
    redirect_conf *r = calloc(1, sizeof(*r));
    if (r) {
        r->http_to_https = true;
        r->https_port = https_port;
        r->status = 301;
    }
    return r;
}

static const char *reason_of(int status)
{
    switch (status) {
    case 302:
        return "Found";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    default:
        return "Moved Permanently";
    }
}

static weir_phase_result send_redirect(weir_session *s, int status, const char *loc, size_t len)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason_of(status));
    weir_header h[2] = {{WEIR_STR("Location"), {loc, len}},
                        {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
    if (weir_session_respond(s, status, h, 2, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* To the same host and target over https (the Host's port replaced by
 * https_port, omitted when 443). */
static weir_phase_result redirect_https(weir_session *s, weir_str host, uint32_t port, int status)
{
    if (host.len == 0 || host.len > 255)
        return weir__app_answer(s, 400, "Bad Request");
    /* A name, an IPv4 address or [IPv6], and a port: nothing that would
     * make the Location point elsewhere (userinfo, a path, spaces). */
    for (size_t i = 0; i < host.len; i++) {
        unsigned char ch = (unsigned char)host.ptr[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == ':' || ch == '[' || ch == ']'))
            return weir__app_answer(s, 400, "Bad Request");
    }
    if (host.ptr[0] == ':' || host.ptr[0] == '.')
        return weir__app_answer(s, 400, "Bad Request");
    size_t hl = host.len;
    if (host.ptr[0] == '[') { /* [v6]:port */
        const char *e = memchr(host.ptr, ']', host.len);
        if (e)
            hl = (size_t)(e - host.ptr) + 1;
    } else {
        const char *colon = memchr(host.ptr, ':', host.len);
        if (colon)
            hl = (size_t)(colon - host.ptr);
    }
    weir_str target = weir_session_target(s);
    size_t cap = hl + target.len + 32;
    char *loc = weir_session_alloc(s, cap);
    if (!loc)
        return WEIR_PHASE_ERROR;
    int n = port == 443 ? snprintf(loc, cap, "https://%.*s", (int)hl, host.ptr)
                        : snprintf(loc, cap, "https://%.*s:%u", (int)hl, host.ptr, port);
    memcpy(loc + n, target.ptr, target.len);
    return send_redirect(s, status, loc, (size_t)n + target.len);
}

static weir_phase_result redirect_request(weir_plugin_call *c)
{
    const redirect_conf *r = c->plugin->conf;
    weir_session *s = c->s;
    weir_tls_info ti;
    if (r->http_to_https && !weir_session_tls(s, &ti))
        return redirect_https(s, weir_headers_get(weir_session_req_headers(s), "host"),
                              r->https_port, r->status);
    if (r->prefix) {
        size_t pl = strlen(r->prefix);
        weir_str path = weir_session_path(s);
        if (path.len >= pl && memcmp(path.ptr, r->prefix, pl) == 0 &&
            (path.len == pl || r->prefix[pl - 1] == '/' || path.ptr[pl] == '/'))
            return WEIR_PHASE_CONTINUE; /* already under it */
        /* From the normalised path (what "under it" was decided on), and
         * the query. "/app" with prefix "/app/" goes to "/app/". */
        weir_str q = weir_session_query(s);
        bool has_q = memchr(weir_session_target(s).ptr, '?', weir_session_target(s).len) != NULL;
        bool bare = pl >= 2 && r->prefix[pl - 1] == '/' && path.len == pl - 1 &&
                    memcmp(path.ptr, r->prefix, pl - 1) == 0;
        size_t skip = pl && r->prefix[pl - 1] == '/' && path.len && path.ptr[0] == '/';
        size_t plen = bare ? 0 : path.len - skip;
        size_t len = pl + plen + (has_q ? 1 + q.len : 0);
        char *loc = weir_session_alloc(s, len + 1);
        if (!loc)
            return WEIR_PHASE_ERROR;
        memcpy(loc, r->prefix, pl);
        if (plen)
            memcpy(loc + pl, path.ptr + skip, plen);
        if (has_q) {
            loc[pl + plen] = '?';
            memcpy(loc + pl + plen + 1, q.ptr, q.len);
        }
        return send_redirect(s, r->status, loc, len);
    }
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_redirect = {
    .category = "redirect",
    .keys = (const weir_cfg_key[]){{"http_to_https", WEIR_CT_BOOLEAN, NULL},
                                   {"https_port", WEIR_CT_INTEGER, NULL},
                                   {"prefix", WEIR_CT_STRING, NULL},
                                   {"status", WEIR_CT_INTEGER, NULL},
                                   {"code", WEIR_CT_INTEGER, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = redirect_parse,
    .free = redirect_free,
    .request = redirect_request,
};
