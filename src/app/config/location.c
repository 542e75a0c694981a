/*
 * location.c - [locations.NAME]: matching, rewrite, header rules, body
 * limits and buffering, timeouts (see config.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/access_log.h"
#include "app/config/read.h"
#include "app/vars.h"
#include "app/toml/toml.h"
#include "weir/addr.h"

/* ---- [locations.NAME] ---- */

const weir_cfg_key weir__cfg_keys_location[] = {
    {"host", WEIR_CT_STRINGS, NULL},
    {"path", WEIR_CT_STRING, NULL},
    {"weight", WEIR_CT_INTEGER, NULL},
    {"upstream", WEIR_CT_STRING, NULL},
    {"rewrite", WEIR_CT_STRING, NULL},
    {"proxy_set_headers", WEIR_CT_STRINGS, NULL},
    {"proxy_add_headers", WEIR_CT_STRINGS, NULL},
    {"proxy_remove_headers", WEIR_CT_STRINGS, NULL},
    {"response_set_headers", WEIR_CT_STRINGS, NULL},
    {"response_add_headers", WEIR_CT_STRINGS, NULL},
    {"response_remove_headers", WEIR_CT_STRINGS, NULL},
    {"client_max_body_size", WEIR_CT_SIZE, NULL},
    {"connection_timeout", WEIR_CT_DURATION, NULL},
    {"read_timeout", WEIR_CT_DURATION, NULL},
    {"write_timeout", WEIR_CT_DURATION, NULL},
    {"echo", WEIR_CT_BOOLEAN, NULL},
    {"grpc_idle_timeout", WEIR_CT_DURATION, NULL},
    {"request_buffering", WEIR_CT_BOOLEAN, NULL},
    {"request_buffer_size", WEIR_CT_SIZE, NULL},
    {"request_buffer_file_size", WEIR_CT_SIZE, NULL},
    {"plugins", WEIR_CT_STRINGS, NULL},
    {"proxy_added_headers", WEIR_CT_STRINGS, NULL},
    {"router", WEIR_CT_STRING, NULL},
    {"router_key", WEIR_CT_STRING, NULL},
    {"router_timeout", WEIR_CT_DURATION, NULL},
    {"router_fallback", WEIR_CT_STRING, "upstream|error"},
    {NULL, 0, NULL}};

/*
 * router = "resp://HOST:PORT" (HOST an address, or a name resolved now),
 * router_key (a value with variables, "$uri" by default), router_timeout
 * (50ms) and router_fallback ("upstream" or "error").
 */
static void load_router(loader *ld, weir_cfg_location *l, const weir_toml_value *t,
                        const char *section)
{
    bool present;
    weir_toml_entry e;
    char *r = weir__cfg_dup_string(ld, t, "router", section, &present);
    if (!r) {
        static const char *const deps[] = {"router_key", "router_timeout", "router_fallback", NULL};
        for (size_t i = 0; deps[i]; i++) {
            if (weir__cfg_entry_of(t, deps[i], &e))
                weir__cfg_err_at(ld, e.line, "'%s' in [%s] needs 'router'", deps[i], section);
        }
        return;
    }
    weir__cfg_entry_of(t, "router", &e);
    l->router_text = r;
    const char *hp = strncmp(r, "resp://", 7) == 0 ? r + 7 : NULL;
    const char *colon = hp ? strrchr(hp, ':') : NULL;
    char host[256], addr[300];
    if (!hp || !colon || colon == hp || (size_t)(colon - hp) >= sizeof(host) || !colon[1]) {
        weir__cfg_err_at(ld, e.line, "'router' in [%s] is \"%s\": expected \"resp://HOST:PORT\"",
                         section, r);
        return;
    }
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai != 0 || !ai) {
        weir__cfg_err_at(ld, e.line, "'router' in [%s]: cannot resolve '%s': %s", section, host,
                         gai ? gai_strerror(gai) : "no address");
        return;
    }
    weir_addr_format(ai->ai_addr, addr, sizeof(addr));
    freeaddrinfo(ai);
    uint32_t ms = 50;
    weir__cfg_get_duration(ld, t, "router_timeout", section, 60000, false, &ms);
    if (!ms) {
        weir__cfg_entry_of(t, "router_timeout", &e);
        weir__cfg_err_at(ld, e.line, "'router_timeout' in [%s] must be more than 0", section);
    }
    l->router_timeout_ms = ms ? ms : 50;
    char err[256];
    l->router = weir_resp_client_new(
        &(weir_resp_client_options){.addr = addr, .timeout_ms = l->router_timeout_ms}, err,
        sizeof(err));
    if (!l->router)
        weir__cfg_err_at(ld, e.line, "'router' in [%s]: %s", section, err);
    char *key = weir__cfg_dup_string(ld, t, "router_key", section, &present);
    l->router_key_text = key ? key : strdup("$uri");
    bool oom = false;
    if (l->router_key_text)
        l->router_key = weir__tmpl_compile(l->router_key_text, &oom);
    if (oom || !l->router_key_text)
        weir__cfg_err_at(ld, l->line, "[%s]: out of memory", section);
    char *fb = weir__cfg_dup_string(ld, t, "router_fallback", section, &present);
    if (fb && strcmp(fb, "error") == 0) {
        l->router_fallback_error = true;
    } else if (fb && strcmp(fb, "upstream") != 0) {
        weir__cfg_entry_of(t, "router_fallback", &e);
        weir__cfg_err_at(ld, e.line,
                         "'router_fallback' in [%s] is \"%s\": expected \"upstream\" or "
                         "\"error\"",
                         section, fb);
    }
    free(fb);
}

bool weir__cfg_valid_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

/*
 * Fields a header rule may not touch: the codecs write framing and
 * connection fields themselves, so a rule setting Content-Length would
 * make the peer wait for a body that never comes, and one removing
 * Connection would do nothing. Host may be set (a backend's virtual
 * host), never added or removed.
 */
const char *weir__cfg_forbidden_field(const char *name, bool is_set_on_request)
{
    static const char *const never[] = {"content-length", "transfer-encoding", "connection",
                                        "keep-alive",     "proxy-connection",  "te",
                                        "trailer",        "upgrade",           NULL};
    for (size_t i = 0; never[i]; i++) {
        if (strcasecmp(name, never[i]) == 0)
            return "a framing or hop-by-hop field, which weir writes itself";
    }
    if (strcasecmp(name, "host") == 0 && !is_set_on_request)
        return "Host (only proxy_set_headers may change it)";
    return NULL;
}

void weir__cfg_load_headers(loader *ld, const weir_toml_value *t, const char *key,
                            const char *section, bool with_value, bool may_set_host,
                            weir_cfg_headers *out)
{
    size_t n = 0;
    int line = 0;
    char **items = weir__cfg_get_string_list(ld, t, key, section, &n, &line);
    if (!items)
        return;
    out->v = calloc(n ? n : 1, sizeof(*out->v));
    for (size_t i = 0; out->v && i < n; i++) {
        char *s = items[i];
        char *colon = with_value ? strchr(s, ':') : NULL;
        if (with_value && !colon) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: '%s' must be \"Name: value\"", key, section,
                             s);
            continue;
        }
        if (colon)
            *colon = '\0';
        const char *value = colon ? colon + 1 : NULL;
        while (value && (*value == ' ' || *value == '\t'))
            value++;
        if (!weir__cfg_valid_token(s)) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: invalid header name '%s'", key, section, s);
            continue;
        }
        const char *why = weir__cfg_forbidden_field(s, may_set_host);
        if (why) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: '%s' cannot be changed by a header rule: %s",
                             key, section, s, why);
            continue;
        }
        bool bad_value = false;
        for (const char *p = value; p && *p; p++) {
            if ((unsigned char)*p < 0x20 && *p != '\t')
                bad_value = true;
        }
        if (bad_value) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: control character in the value of '%s'", key,
                             section, s);
            continue;
        }
        bool oom = false;
        weir_cfg_header *e = &out->v[out->n];
        e->name = strdup(s);
        e->value = value ? strdup(value) : NULL;
        e->tmpl = e->value ? weir__tmpl_compile(e->value, &oom) : NULL;
        e->name_len = e->name ? strlen(e->name) : 0;
        e->value_len = e->value ? strlen(e->value) : 0;
        if (!e->name || (value && !e->value) || oom) {
            weir__cfg_err_at(ld, line, "out of memory");
            free(e->name);
            free(e->value);
            continue;
        }
        out->n++;
    }
    weir__cfg_free_list(items, n);
}

void weir__cfg_free_headers(weir_cfg_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
        weir__tmpl_free(h->v[i].tmpl);
    }
    free(h->v);
}

/* " = /exact " is "=/exact", "~ \\.php$" is "~\\.php$": Pingap trims the
 * blanks after the sign, and around the path. */
static void trim_path(char *p)
{
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        p[--len] = '\0';
    size_t lead = 0;
    while (p[lead] == ' ' || p[lead] == '\t')
        lead++;
    memmove(p, p + lead, len - lead + 1);
    if (p[0] == '=' || p[0] == '~') {
        size_t k = 1;
        while (p[k] == ' ' || p[k] == '\t')
            k++;
        memmove(p + 1, p + k, strlen(p + k) + 1);
    }
}
/* proxy_added_headers: which of the fields weir adds upstream this location
 * keeps (all when absent, none for []). */
static void load_added_headers(loader *ld, const weir_toml_value *t, const char *section,
                               weir_cfg_location *l)
{
    static const struct {
        const char *name;
        unsigned bit;
    } fields[] = {{"x-request-id", WEIR_ADD_REQUEST_ID},
                  {"x-forwarded-for", WEIR_ADD_X_FORWARDED_FOR},
                  {"x-real-ip", WEIR_ADD_X_REAL_IP},
                  {"x-forwarded-proto", WEIR_ADD_X_FORWARDED_PROTO},
                  {"via", WEIR_ADD_VIA}};
    weir_toml_entry e;
    if (!weir__cfg_entry_of(t, "proxy_added_headers", &e))
        return;
    size_t n;
    int line = e.line;
    char **names = weir__cfg_get_string_list(ld, t, "proxy_added_headers", section, &n, &line);
    if (!names)
        return;
    l->has_added = true;
    l->added = 0;
    for (size_t i = 0; i < n; i++) {
        size_t f = 0;
        while (f < sizeof(fields) / sizeof(fields[0]) && strcasecmp(names[i], fields[f].name) != 0)
            f++;
        if (f == sizeof(fields) / sizeof(fields[0]))
            weir__cfg_err_at(ld, line,
                             "'proxy_added_headers' in [%s]: '%s' is not a field weir adds "
                             "(x-request-id, x-forwarded-for, x-real-ip, x-forwarded-proto, via)",
                             section, names[i]);
        else
            l->added |= fields[f].bit;
    }
    weir__cfg_free_list(names, n);
}

void weir__cfg_load_location(loader *ld, weir_cfg_location *l, const weir_toml_value *t,
                             char **upstream_name, int *upstream_line)
{
    char section[300];
    snprintf(section, sizeof(section), "locations.%s", l->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, weir__cfg_keys_location);
    int line = 0;
    l->hosts = weir__cfg_get_string_list(ld, t, "host", section, &l->n_hosts, &line);
    if (l->hosts && !weir__cfg_split_commas(&l->hosts, &l->n_hosts))
        weir__cfg_err_at(ld, line, "out of memory");
    bool present;
    l->path = weir__cfg_dup_string(ld, t, "path", section, &present);
    if (!l->path && !(l->path = strdup(""))) {
        weir__cfg_err_at(ld, l->line, "out of memory");
        return;
    }
    trim_path(l->path);
    int64_t v;
    if (weir__cfg_get_int(ld, t, "weight", section, 0, 1000000000, &v)) {
        l->has_weight = true;
        l->weight = v;
    }
    /* Check the path and host rules now, so their errors are reported with
     * every other one (the server's router is built only from a valid
     * configuration). */
    weir_toml_entry pe;
    int path_line = weir__cfg_entry_of(t, "path", &pe) ? pe.line : l->line;
    if (l->path[0] && l->path[0] != '/' && l->path[0] != '=' && l->path[0] != '~') {
        weir__cfg_err_at(
            ld, path_line,
            "'path' in [%s] must be \"/prefix\", \"=/exact\", \"~regex\" or empty, not '%s'",
            section, l->path);
    } else {
        weir_route_spec spec = {
            .hosts = (const char *const *)l->hosts, .n_hosts = l->n_hosts, .path = l->path};
        char rerr[512];
        weir_router *r = weir__router_new(&spec, 1, rerr, sizeof(rerr));
        if (!r)
            weir__cfg_err_at(ld, strstr(rerr, "host") && line ? line : path_line, "[%s]: %s",
                             section, strncmp(rerr, "location 0: ", 12) == 0 ? rerr + 12 : rerr);
        weir__router_free(r);
    }
    *upstream_name = weir__cfg_dup_string(ld, t, "upstream", section, &present);
    weir_toml_entry e;
    *upstream_line = weir__cfg_entry_of(t, "upstream", &e) ? e.line : l->line;
    weir__cfg_get_bool(ld, t, "echo", section, &l->echo);
    /* Without either, a plugin must answer every request (the chains
     * check it: weir__cfg_location_chains). */
    load_router(ld, l, t, section);
    if (!*upstream_name && !l->echo && !(l->router && l->router_fallback_error)) {
        l->no_upstream = weir__cfg_entry_of(t, "plugins", &(weir_toml_entry){0});
        if (!l->no_upstream && l->router)
            weir__cfg_err_at(ld, l->line,
                             "[%s] has a router but no 'upstream' to fall back to (set "
                             "'upstream', or router_fallback = \"error\")",
                             section);
        else if (!l->no_upstream)
            weir__cfg_err_at(ld, l->line, "[%s] needs 'upstream' (or echo = true)", section);
    }
    if (l->router && l->echo)
        weir__cfg_err_at(ld, l->line, "[%s] has both a router and echo = true", section);
    if (*upstream_name && l->echo)
        weir__cfg_err_at(ld, *upstream_line, "[%s] has both 'upstream' and echo = true", section);

    char *rewrite = weir__cfg_dup_string(ld, t, "rewrite", section, &present);
    if (rewrite) {
        l->rewrite_text = strdup(rewrite); /* before the split below */
        weir__cfg_entry_of(t, "rewrite", &e);
        /* "REGEX REPLACEMENT": the regex ends at the first unescaped space. */
        char *sp = strpbrk(rewrite, " \t");
        if (!sp) {
            weir__cfg_err_at(ld, e.line, "'rewrite' in [%s] must be \"REGEX REPLACEMENT\"",
                             section);
        } else {
            *sp = '\0';
            char *repl = sp + 1;
            while (*repl == ' ' || *repl == '\t')
                repl++;
            int code;
            PCRE2_SIZE off;
            l->rewrite_re =
                pcre2_compile((PCRE2_SPTR)rewrite, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
            if (!l->rewrite_re) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(code, msg, sizeof(msg));
                weir__cfg_err_at(ld, e.line, "invalid regex in 'rewrite' of [%s]: %s at offset %zu",
                                 section, (const char *)msg, (size_t)off);
            } else {
                pcre2_jit_compile(l->rewrite_re, PCRE2_JIT_COMPLETE);
                l->rewrite_repl = strdup(repl);
            }
        }
        free(rewrite);
    }
    weir__cfg_load_headers(ld, t, "proxy_set_headers", section, true, true, &l->proxy_set);
    weir__cfg_load_headers(ld, t, "proxy_add_headers", section, true, false, &l->proxy_add);
    weir__cfg_load_headers(ld, t, "proxy_remove_headers", section, false, false, &l->proxy_remove);
    weir__cfg_load_headers(ld, t, "response_set_headers", section, true, false, &l->resp_set);
    weir__cfg_load_headers(ld, t, "response_add_headers", section, true, false, &l->resp_add);
    weir__cfg_load_headers(ld, t, "response_remove_headers", section, false, false,
                           &l->resp_remove);
    uint64_t size;
    if (weir__cfg_get_size(ld, t, "client_max_body_size", section, UINT64_MAX / 2, &size)) {
        l->client_max_body_size = size;
        l->has_max_body = true;
    }
    weir__cfg_get_duration(ld, t, "connection_timeout", section, 3600000, false,
                           &l->connect_timeout_ms);
    weir__cfg_get_duration(ld, t, "read_timeout", section, 86400000, false, &l->read_timeout_ms);
    weir__cfg_get_duration(ld, t, "write_timeout", section, 86400000, false, &l->write_timeout_ms);
    weir__cfg_get_duration(ld, t, "grpc_idle_timeout", section, 7 * 86400000u, false,
                           &l->grpc_idle_timeout_ms);
    bool buffering = true;
    weir__cfg_get_bool(ld, t, "request_buffering", section, &buffering);
    l->request_buffer_bytes = 64 * 1024;
    uint64_t buffer_size;
    if (weir__cfg_get_size(ld, t, "request_buffer_size", section, 1024 * 1024 * 1024, &buffer_size))
        l->request_buffer_bytes = buffer_size;
    uint64_t file_size;
    if (weir__cfg_get_size(ld, t, "request_buffer_file_size", section, UINT64_C(1) << 40,
                           &file_size)) {
        weir_toml_entry fe;
        weir__cfg_entry_of(t, "request_buffer_file_size", &fe);
        if (file_size && file_size <= l->request_buffer_bytes)
            weir__cfg_err_at(ld, fe.line,
                             "'request_buffer_file_size' in [%s] must be larger than "
                             "request_buffer_size (%" PRIu64 " bytes), or 0",
                             section, l->request_buffer_bytes);
        else if (file_size && buffering)
            weir__cfg_check_temp_dir(ld, fe.line);
        l->request_buffer_file_bytes = file_size;
    }
    if (!buffering)
        l->request_buffer_bytes = l->request_buffer_file_bytes = 0;
    load_added_headers(ld, t, section, l);
    int plugins_line = l->line;
    l->plugin_names =
        weir__cfg_get_string_list(ld, t, "plugins", section, &l->n_plugin_names, &plugins_line);
    weir__cfg_location_chains(ld, l, plugins_line);
}
