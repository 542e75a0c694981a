/*
 * combined_auth.c - Pingap's combined_auth: an app id, a timestamp and a
 * signature in the query, with a time window and an IP list per app.
 *
 *     [plugins.apps]
 *     category = "combined_auth"
 *     authorizations = [
 *         { app_id = "shop", secret = "s3cr3t", deviation = 60, ip_list = ["10.0.0.0/8"] },
 *     ]
 *
 * A request carries ?app_id=shop&ts=UNIX_SECONDS&digest=HEX where HEX is
 * the SHA-256 of "SECRET:TS" in hexadecimal (either case). It passes when
 * the app is known, the client address (weir's, trusted_proxies taken into
 * account) is in the app's ip_list if it has one, TS is within deviation
 * seconds of now, and the digest matches (CRYPTO_memcmp). Anything else is
 * a 401 with Cache-Control: no-store; the error log (info) says which
 * check failed. Each parameter exactly once: two are two opinions.
 *
 * Pingap's secret "*" (the app's requests are not checked) is taken, with
 * a warning when the file is loaded.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/fields.h"
#include "app/plugin/plugins.h"

#define MAX_SECRET 1024

typedef struct app_auth {
    char *app_id;
    char *secret;
    size_t secret_len;
    bool any; /* secret "*" */
    int64_t deviation;
    weir_cidr *cidrs;
    size_t n_cidrs;
} app_auth;

typedef struct ca_conf {
    EVP_MD *md;
    app_auth *apps;
    size_t n;
} ca_conf;

static void ca_free(void *conf)
{
    ca_conf *c = conf;
    for (size_t i = 0; i < c->n; i++) {
        free(c->apps[i].app_id);
        if (c->apps[i].secret)
            OPENSSL_cleanse(c->apps[i].secret, c->apps[i].secret_len);
        free(c->apps[i].secret);
        free(c->apps[i].cidrs);
    }
    free(c->apps);
    EVP_MD_free(c->md);
    free(c);
}

static void parse_app(loader *ld, ca_conf *c, const weir_toml_value *t, const char *section)
{
    int line = weir_toml_line(t);
    app_auth *a = &c->apps[c->n];
    memset(a, 0, sizeof(*a));
    static const weir_cfg_key keys[] = {{"app_id", WEIR_CT_STRING, NULL},
                                        {"secret", WEIR_CT_STRING, NULL},
                                        {"deviation", WEIR_CT_INTEGER, NULL},
                                        {"ip_list", WEIR_CT_STRINGS, NULL},
                                        {NULL, 0, NULL}};
    weir__cfg_check_keys(ld, t, section, keys);
    bool present;
    a->app_id = weir__cfg_dup_string(ld, t, "app_id", section, &present);
    a->secret = weir__cfg_dup_string(ld, t, "secret", section, &present);
    if (!a->app_id || !a->app_id[0]) {
        weir__cfg_err_at(ld, line, "an entry of 'authorizations' in [%s] needs an 'app_id'",
                         section);
    } else {
        for (size_t i = 0; i < c->n; i++) {
            if (strcmp(c->apps[i].app_id, a->app_id) == 0)
                weir__cfg_err_at(ld, line, "'authorizations' in [%s]: app '%s' is listed twice",
                                 section, a->app_id);
        }
    }
    if (!a->secret || !a->secret[0] || strlen(a->secret) > MAX_SECRET)
        weir__cfg_err_at(ld, line, "app '%s' in [%s] needs a 'secret' of 1 to %d characters",
                         a->app_id ? a->app_id : "", section, MAX_SECRET);
    else
        a->secret_len = strlen(a->secret);
    a->any = a->secret && strcmp(a->secret, "*") == 0;
    if (a->any)
        weir_log(WEIR_LEVEL_WARN,
                 "%s:%d: app '%s' in [%s] has secret \"*\": its requests are not checked", ld->file,
                 line, a->app_id ? a->app_id : "", section);
    int64_t dev = 60;
    weir__cfg_get_int(ld, t, "deviation", section, 0, 86400 * 7, &dev);
    a->deviation = dev;
    size_t n = 0;
    int ll = line;
    char **ips = weir__cfg_get_string_list(ld, t, "ip_list", section, &n, &ll);
    if (n) {
        a->cidrs = calloc(n, sizeof(*a->cidrs));
        for (size_t i = 0; a->cidrs && i < n; i++) {
            if (weir_cidr_parse(ips[i], &a->cidrs[a->n_cidrs]) != WEIR_OK)
                weir__cfg_err_at(ld, ll,
                                 "'ip_list' of app '%s' in [%s]: '%s' is not an address "
                                 "or a block",
                                 a->app_id ? a->app_id : "", section, ips[i]);
            else
                a->n_cidrs++;
        }
    }
    weir__cfg_free_list(ips, n);
    c->n++;
}

static bool ca_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    ca_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    c->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    const weir_toml_value *list = weir_toml_table_get(t, "authorizations");
    int line = list ? weir_toml_line(list) : weir_toml_line(t);
    size_t n = list && weir_toml_type_of(list) == WEIR_TOML_ARRAY ? weir_toml_array_count(list) : 0;
    if (n == 0) {
        weir__cfg_err_at(ld, line,
                         "[%s] needs 'authorizations', a list of "
                         "{ app_id, secret, deviation, ip_list }",
                         section);
        return true;
    }
    c->apps = calloc(n, sizeof(*c->apps));
    if (!c->apps)
        return false;
    for (size_t i = 0; i < n; i++) {
        const weir_toml_value *e = weir_toml_array_at(list, i);
        if (weir_toml_type_of(e) != WEIR_TOML_TABLE) {
            weir__cfg_err_at(ld, weir_toml_line(e),
                             "'authorizations' in [%s]: each entry is a "
                             "table { app_id = ..., secret = ... }",
                             section);
            continue;
        }
        parse_app(ld, c, e, section);
    }
    return true;
}

/* ---- per request ---- */

static weir_phase_result refuse(weir_session *s, const char *why)
{
    weir_str id = weir_session_request_id(s);
    weir_log(WEIR_LEVEL_INFO, "combined_auth: %s (request %.*s): 401", why, (int)id.len, id.ptr);
    static const char body[] = "401 Unauthorized\n";
    weir_header h[2] = {{WEIR_STR("Content-Type"), WEIR_STR("text/plain; charset=utf-8")},
                        {WEIR_STR("Cache-Control"), WEIR_STR("no-store")}};
    if (weir_session_respond(s, 401, h, 2, body, sizeof(body) - 1) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* The one, percent-decoded value of parameter name into out; its length,
 * or -1 when it is missing, given twice, or malformed. */
static long param(weir_str q, const char *name, char *out, size_t cap)
{
    weir_str v;
    if (weir__query_params(q, name, &v) != 1)
        return -1;
    return weir__unescape(v, out, cap);
}

static weir_phase_result ca_request(weir_plugin_call *call)
{
    const ca_conf *c = call->plugin->conf;
    weir_session *s = call->s;
    weir_str q = weir_session_query(s);
    char app_id[256], ts[32], digest[80];
    long al = param(q, "app_id", app_id, sizeof(app_id));
    if (al <= 0)
        return refuse(s, "no app_id, or more than one");
    const app_auth *a = NULL;
    for (size_t i = 0; i < c->n && !a; i++) {
        if (strlen(c->apps[i].app_id) == (size_t)al && memcmp(c->apps[i].app_id, app_id, al) == 0)
            a = &c->apps[i];
    }
    if (!a)
        return refuse(s, "unknown app_id");
    if (a->any)
        return WEIR_PHASE_CONTINUE;
    if (a->n_cidrs && !weir__plugin_ip_in(a->cidrs, a->n_cidrs, weir_session_client_ip(s)))
        return refuse(s, "client address not in the app's ip_list");
    long tl = param(q, "ts", ts, sizeof(ts) - 1);
    if (tl <= 0 || tl > 18)
        return refuse(s, "no ts, or a malformed one");
    int64_t t = 0;
    for (long i = 0; i < tl; i++) {
        if (ts[i] < '0' || ts[i] > '9')
            return refuse(s, "a malformed ts");
        t = t * 10 + (ts[i] - '0');
    }
    int64_t now = (int64_t)time(NULL);
    if (t > now + a->deviation || t < now - a->deviation)
        return refuse(s, "ts outside the app's deviation");
    long dl = param(q, "digest", digest, sizeof(digest));
    if (dl != 64)
        return refuse(s, "no digest, or not 64 hex digits");
    /* SHA-256 of "SECRET:TS", as lower-case hex */
    unsigned char msg[MAX_SECRET + 1 + 32], md[32];
    memcpy(msg, a->secret, a->secret_len);
    msg[a->secret_len] = ':';
    memcpy(msg + a->secret_len + 1, ts, (size_t)tl);
    unsigned int mdl = 0;
    int ok = EVP_Digest(msg, a->secret_len + 1 + (size_t)tl, md, &mdl, c->md, NULL);
    OPENSSL_cleanse(msg, a->secret_len);
    if (ok != 1 || mdl != 32)
        return WEIR_PHASE_ERROR;
    static const char hex[] = "0123456789abcdef";
    char want[64], got[64];
    for (int i = 0; i < 32; i++) {
        want[2 * i] = hex[md[i] >> 4];
        want[2 * i + 1] = hex[md[i] & 15];
    }
    for (int i = 0; i < 64; i++) {
        char ch = digest[i];
        got[i] = ch >= 'A' && ch <= 'F' ? (char)(ch - 'A' + 'a') : ch;
    }
    if (CRYPTO_memcmp(want, got, 64) != 0)
        return refuse(s, "wrong digest");
    return WEIR_PHASE_CONTINUE;
}

static const weir_cfg_key ca_keys[] = {{"authorizations", WEIR_CT_TABLE, NULL}, {NULL, 0, NULL}};

const weir_plugin_def weir__plugin_combined_auth = {
    .category = "combined_auth",
    .keys = ca_keys,
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = ca_parse,
    .free = ca_free,
    .request = ca_request,
};
