/*
 * restriction.c - ip_restriction, referer_restriction and ua_restriction:
 * allow only, or deny, requests whose client address, Referer host or
 * User-Agent is in a list; the others get 403 (and `message`).
 *
 *     [plugins.office_only]
 *     category = "ip_restriction"
 *     type = "allow"                 # or "deny" (the default)
 *     ip_list = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
 *     message = "not from here"
 *
 *     [plugins.no_hotlinks]
 *     category = "referer_restriction"
 *     type = "allow"
 *     referer_list = ["example.com", "*.example.com"]
 *
 *     [plugins.no_bots]
 *     category = "ua_restriction"
 *     ua_list = ["~(?i)bot", "~^curl/"]
 *
 * The client address is the one trusted_proxies decide (X-Forwarded-For
 * from a trusted peer). A request without a Referer (or User-Agent) is in
 * no list: an allow list refuses it, a deny list lets it through.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "app/plugin/match.h"
#include "app/plugin/plugins.h"

typedef struct restrict_conf {
    bool allow; /* the list is what is allowed (else what is denied) */
    weir_cidr *cidrs;
    size_t n_cidrs;
    weir_patterns *patterns;
    char *message;
} restrict_conf;

static void restrict_free(void *conf)
{
    restrict_conf *r = conf;
    free(r->cidrs);
    weir__patterns_free(r->patterns);
    free(r->message);
    free(r);
}

static restrict_conf *common(loader *ld, const weir_toml_value *t, const char *section)
{
    restrict_conf *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    bool present;
    char *type = weir__cfg_dup_string(ld, t, "type", section, &present);
    if (type && strcmp(type, "allow") == 0) {
        r->allow = true;
    } else if (type && strcmp(type, "deny") != 0) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "type", &e);
        weir__cfg_err_at(ld, e.line, "'type' in [%s] must be allow or deny, not '%s'", section,
                         type);
    }
    free(type);
    r->message = weir__cfg_dup_string(ld, t, "message", section, &present);
    return r;
}

static bool ip_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    restrict_conf *r = common(ld, t, section);
    if (!r)
        return false;
    *conf = r;
    size_t n = 0;
    int line = 0;
    char **items = weir__cfg_get_string_list(ld, t, "ip_list", section, &n, &line);
    if (!items) {
        if (!weir__cfg_entry_of(t, "ip_list", &(weir_toml_entry){0}))
            weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'ip_list'", section);
        return true;
    }
    r->cidrs = calloc(n ? n : 1, sizeof(*r->cidrs));
    for (size_t i = 0; r->cidrs && i < n; i++) {
        if (weir_cidr_parse(items[i], &r->cidrs[r->n_cidrs]) != WEIR_OK)
            weir__cfg_err_at(ld, line, "'ip_list' in [%s]: '%s' is not an address or CIDR block",
                             section, items[i]);
        else
            r->n_cidrs++;
    }
    weir__cfg_free_list(items, n);
    return true;
}

static bool list_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf,
                       const char *key)
{
    restrict_conf *r = common(ld, t, section);
    if (!r)
        return false;
    *conf = r;
    bool present;
    r->patterns = weir__patterns_load(ld, t, key, section, &present);
    if (!present)
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs '%s'", section, key);
    return true;
}

static bool referer_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    return list_parse(ld, t, section, conf, "referer_list");
}

static bool ua_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    return list_parse(ld, t, section, conf, "ua_list");
}

bool weir__plugin_ip_in(const weir_cidr *c, size_t n, weir_str ip)
{
    char text[64];
    if (!ip.ptr || ip.len >= sizeof(text))
        return false;
    memcpy(text, ip.ptr, ip.len);
    text[ip.len] = '\0';
    uint8_t a[16];
    int family = memchr(ip.ptr, ':', ip.len) ? AF_INET6 : AF_INET;
    if (inet_pton(family, text, a) != 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *want = c[i].addr;
        const uint8_t *have = a;
        int bits = c[i].prefix_len;
        if (c[i].family != family) {
            /* An IPv4 block matches an IPv4-mapped IPv6 client. */
            static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (!(c[i].family == AF_INET && family == AF_INET6 && memcmp(a, mapped, 12) == 0))
                continue;
            have = a + 12;
        }
        int full = bits / 8, rest = bits % 8;
        if (memcmp(want, have, (size_t)full) != 0)
            continue;
        if (rest && ((want[full] ^ have[full]) & (0xff << (8 - rest))))
            continue;
        return true;
    }
    return false;
}

static weir_phase_result verdict(weir_plugin_call *c, bool in_list)
{
    const restrict_conf *r = c->plugin->conf;
    if (in_list == r->allow)
        return WEIR_PHASE_CONTINUE;
    const char *msg = r->message ? r->message : "403 Forbidden\n";
    return weir__plugin_respond_text(c->s, 403, msg, strlen(msg));
}

static weir_phase_result ip_request(weir_plugin_call *c)
{
    const restrict_conf *r = c->plugin->conf;
    return verdict(c, weir__plugin_ip_in(r->cidrs, r->n_cidrs, weir_session_client_ip(c->s)));
}

/* The host of a Referer URL ("https://a.example.com:8443/x" -> "a.example.com"). */
static weir_str referer_host(weir_str ref)
{
    const char *p = ref.ptr, *end = ref.ptr + ref.len;
    const char *sep = ref.len > 3 ? memchr(p, ':', ref.len) : NULL;
    if (!sep || end - sep < 3 || sep[1] != '/' || sep[2] != '/')
        return WEIR_STR_NULL;
    p = sep + 3;
    const char *h = p;
    while (p < end && *p != '/' && *p != '\\' && *p != '?' && *p != '#')
        p++; /* a browser reads '\\' as '/' */
    const char *at = memchr(h, '@', (size_t)(p - h));
    if (at)
        h = at + 1;
    const char *stop = p;
    if (h < stop && *h == '[') {
        const char *rb = memchr(h, ']', (size_t)(stop - h));
        return rb ? (weir_str){h, (size_t)(rb - h + 1)} : WEIR_STR_NULL;
    }
    const char *colon = memchr(h, ':', (size_t)(stop - h));
    size_t len = (size_t)((colon ? colon : stop) - h);
    if (len && h[len - 1] == '.') /* "evil.com." is evil.com */
        len--;
    return (weir_str){h, len};
}

static weir_phase_result referer_request(weir_plugin_call *c)
{
    const restrict_conf *r = c->plugin->conf;
    weir_str ref = weir_headers_get(weir_session_req_headers(c->s), "referer");
    weir_str host = ref.ptr ? referer_host(ref) : WEIR_STR_NULL;
    return verdict(c, host.ptr && host.len && weir__patterns_match(r->patterns, host, !r->allow));
}

static weir_phase_result ua_request(weir_plugin_call *c)
{
    const restrict_conf *r = c->plugin->conf;
    weir_str ua = weir_headers_get(weir_session_req_headers(c->s), "user-agent");
    return verdict(c, ua.ptr && weir__patterns_match(r->patterns, ua, !r->allow));
}

const weir_plugin_def weir__plugin_ip_restriction = {
    .category = "ip_restriction",
    .keys = (const weir_cfg_key[]){{"type", WEIR_CT_STRING, NULL},
                                   {"ip_list", WEIR_CT_STRINGS, NULL},
                                   {"message", WEIR_CT_STRING, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = ip_parse,
    .free = restrict_free,
    .request = ip_request,
};

const weir_plugin_def weir__plugin_referer_restriction = {
    .category = "referer_restriction",
    .keys = (const weir_cfg_key[]){{"type", WEIR_CT_STRING, NULL},
                                   {"referer_list", WEIR_CT_STRINGS, NULL},
                                   {"message", WEIR_CT_STRING, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = referer_parse,
    .free = restrict_free,
    .request = referer_request,
};

const weir_plugin_def weir__plugin_ua_restriction = {
    .category = "ua_restriction",
    .keys = (const weir_cfg_key[]){{"type", WEIR_CT_STRING, NULL},
                                   {"ua_list", WEIR_CT_STRINGS, NULL},
                                   {"message", WEIR_CT_STRING, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = ua_parse,
    .free = restrict_free,
    .request = ua_request,
};
