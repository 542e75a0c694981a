/*
 * key_auth.c - API keys in a header or a query parameter, Pingap's keys.
 *
 *     [plugins.keys]
 *     category = "key_auth"
 *     header = "X-API-Key"          # or: query = "api_key"
 *     keys = ["k-123...", "k-456..."]
 *     hide_credentials = true       # the backend does not see the key
 *     delay = "1s"                  # a failure is answered after this long
 *
 * A request whose key is missing or unknown gets 401. Exactly one field
 * (or parameter) of that name: two are two opinions, refused. A query
 * value is percent-decoded first. Keys are kept as their SHA-256 and a
 * request's key is hashed and compared with every one (CRYPTO_memcmp), so
 * the time says neither which key nearly matched nor how long keys are.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/fields.h"
#include "app/plugin/plugins.h"

#define MAX_KEY 1024

typedef struct key_conf {
    EVP_MD *md; /* SHA-256, fetched once: an implicit fetch per request costs more than the hash */
    char *header, *query;
    unsigned char (*digests)[32];
    size_t n;
    bool hide;
    uint32_t delay_ms;
} key_conf;

static void key_free(void *conf)
{
    key_conf *c = conf;
    free(c->header);
    free(c->query);
    if (c->digests)
        OPENSSL_cleanse(c->digests, c->n * 32);
    free(c->digests);
    EVP_MD_free(c->md);
    free(c);
}

static bool digest(const EVP_MD *md, const void *p, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    return md && EVP_Digest(p, len, out, &n, md, NULL) == 1 && n == 32;
}

static bool key_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    key_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    int line = weir_toml_line(t);
    c->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    bool present;
    c->header = weir__cfg_dup_string(ld, t, "header", section, &present);
    c->query = weir__cfg_dup_string(ld, t, "query", section, &present);
    if (!c->header == !c->query)
        weir__cfg_err_at(ld, line, "[%s] needs one of 'header' and 'query', where the key is",
                         section);
    if (c->header && !weir__cfg_valid_token(c->header))
        weir__cfg_err_at(ld, line, "'header' in [%s] is not a header name", section);
    if (c->header && weir__cfg_forbidden_field(c->header, false))
        weir__cfg_err_at(ld, line, "'header' in [%s]: '%s' is %s", section, c->header,
                         weir__cfg_forbidden_field(c->header, false));
    if (c->query && (!c->query[0] || strpbrk(c->query, "&=#? ")))
        weir__cfg_err_at(ld, line, "'query' in [%s] is not a query parameter name", section);
    size_t n = 0;
    char **keys = weir__cfg_get_string_list(ld, t, "keys", section, &n, &line);
    if (!keys || n == 0) {
        weir__cfg_err_at(ld, line, "[%s] needs 'keys', a list of keys", section);
        n = 0;
    }
    c->digests = calloc(n ? n : 1, 32);
    for (size_t i = 0; keys && c->digests && i < n; i++) {
        size_t len = strlen(keys[i]);
        if (len == 0 || len > MAX_KEY)
            weir__cfg_err_at(ld, line, "'keys' in [%s]: a key has 1 to %d characters", section,
                             MAX_KEY);
        else if (!digest(c->md, keys[i], len, c->digests[c->n++]))
            weir__cfg_err_at(ld, line, "'keys' in [%s]: SHA-256 failed", section);
        OPENSSL_cleanse(keys[i], len);
    }
    weir__cfg_free_list(keys, n);
    weir__cfg_get_bool(ld, t, "hide_credentials", section, &c->hide);
    weir__cfg_get_duration(ld, t, "delay", section, 60000, true, &c->delay_ms);
    return c->digests != NULL;
}

static weir_phase_result refuse(weir_session *s)
{
    static const char body[] = "401 Unauthorized\n";
    return weir__plugin_respond_text(s, 401, body, sizeof(body) - 1);
}

static void delayed(weir_session *s, void *ctx)
{
    (void)ctx;
    weir__plugin_resume(s, refuse(s));
}

static weir_phase_result key_request(weir_plugin_call *call)
{
    const key_conf *c = call->plugin->conf;
    weir_session *s = call->s;
    weir_headers *h = weir_session_req_headers(s);
    weir_str v = WEIR_STR_NULL;
    size_t count = 0;
    if (c->header) {
        size_t nl = strlen(c->header);
        for (size_t i = 0; i < weir_headers_count(h); i++) {
            weir_header f = weir_headers_at(h, i);
            if (f.name.len == nl && strncasecmp(f.name.ptr, c->header, nl) == 0 && !count++)
                v = f.value;
        }
    } else {
        count = weir__query_params(weir_session_query(s), c->query, &v);
    }
    char key[MAX_KEY];
    long n = -1;
    if (count == 1 && c->query) {
        n = weir__unescape(v, key, sizeof(key));
    } else if (count == 1 && v.len <= MAX_KEY) {
        memcpy(key, v.ptr, v.len);
        n = (long)v.len;
    }
    bool ok = false;
    unsigned char d[32];
    if (n > 0 && digest(c->md, key, (size_t)n, d)) {
        for (size_t i = 0; i < c->n; i++) /* every one, without stopping */
            ok |= CRYPTO_memcmp(d, c->digests[i], 32) == 0;
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok) {
        weir_str ip = weir_session_client_ip(s), id = weir_session_request_id(s);
        weir_log(WEIR_LEVEL_INFO, "client %.*s: key_auth: 401: %s (request %.*s)", (int)ip.len,
                 ip.ptr,
                 count == 0  ? "no key"
                 : count > 1 ? "several keys"
                 : n <= 0    ? "malformed key"
                             : "unknown key",
                 (int)id.len, id.ptr);
        if (c->delay_ms) {
            weir_session_set_timer(s, c->delay_ms, delayed);
            return WEIR_PHASE_PENDING;
        }
        return refuse(s);
    }
    if (c->hide) {
        if (c->query) {
            if (weir__drop_query_param(s, c->query) != WEIR_OK)
                return WEIR_PHASE_ERROR;
        } else if (c->header) {
            weir_headers_remove(h, c->header);
        }
    }
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_key_auth = {
    .category = "key_auth",
    .keys = (const weir_cfg_key[]){{"header", WEIR_CT_STRING, NULL},
                                   {"query", WEIR_CT_STRING, NULL},
                                   {"keys", WEIR_CT_STRINGS, NULL},
                                   {"hide_credentials", WEIR_CT_BOOLEAN, NULL},
                                   {"delay", WEIR_CT_DURATION, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = key_parse,
    .free = key_free,
    .request = key_request,
};
