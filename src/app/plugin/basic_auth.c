/*
 * basic_auth.c - HTTP Basic authentication (RFC 7617), Pingap's keys.
 *
 *     [plugins.auth]
 *     category = "basic_auth"
 *     authorizations = ["YWxpY2U6c2VjcmV0",             # base64 of "alice:secret"
 *                       "bob:$6$salt$...",              # htpasswd lines: crypt(3)
 *                       "carol:$2y$05$..."]             # bcrypt, SHA-512, SHA-256
 *     realm = "api"
 *     hide_credentials = true   # the backend does not see Authorization
 *     delay = "1s"              # a failure is answered after this long
 *
 * A request without valid credentials gets 401 with
 * `WWW-Authenticate: Basic realm="...", charset="UTF-8"`. An entry with a
 * ':' is an htpasswd line, "user:hash", verified with libcrypt's crypt_rn
 * (bcrypt $2y$/$2b$/$2a$, SHA-512 $6$, SHA-256 $5$, yescrypt $y$); any other
 * entry is base64 of "user:password", compared whole. Comparisons are in
 * constant time (CRYPTO_memcmp) and every plain entry is compared, so the
 * time does not tell which entry nearly matched. A hash is verified on the
 * worker, as nginx's auth_basic does: bcrypt's cost blocks it that long.
 */
#include <crypt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/plugins.h"

#define MAX_CREDENTIAL 1024 /* decoded user:password */

typedef struct entry {
    char *user;  /* htpasswd: the user; NULL for a plain entry */
    char *value; /* htpasswd: the hash; plain: the decoded "user:password" */
    size_t len;
} entry;

typedef struct basic_conf {
    entry *v;
    size_t n;
    char *challenge; /* the WWW-Authenticate value */
    bool hide;
    uint32_t delay_ms;
} basic_conf;

static void basic_free(void *conf)
{
    basic_conf *c = conf;
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].user);
        if (c->v[i].value)
            OPENSSL_cleanse(c->v[i].value, c->v[i].len);
        free(c->v[i].value);
    }
    free(c->v);
    free(c->challenge);
    free(c);
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Strict base64 (RFC 4648 4, padding required, no blanks) into out;
 * returns the length, or -1. */
static long b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len == 0 || len % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char ch = (unsigned char)in[i + k];
            if (ch == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad || (v[k] = b64_value(ch)) < 0)
                return -1;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* Bits that padding drops must be zero: one encoding per value. */
        if ((pad == 2 && (w & 0xffff)) || (pad == 1 && (w & 0xff)))
            return -1;
        int n = 3 - pad;
        if (o + (size_t)n > cap)
            return -1;
        for (int k = 0; k < n; k++)
            out[o++] = (unsigned char)(w >> (16 - 8 * k));
    }
    return (long)o;
}

static bool known_hash(const char *h)
{
    return strncmp(h, "$2y$", 4) == 0 || strncmp(h, "$2b$", 4) == 0 || strncmp(h, "$2a$", 4) == 0 ||
           strncmp(h, "$6$", 3) == 0 || strncmp(h, "$5$", 3) == 0 || strncmp(h, "$y$", 3) == 0;
}

static bool add_entry(loader *ld, basic_conf *c, const char *s, int line, const char *section)
{
    entry *e = &c->v[c->n];
    const char *colon = strchr(s, ':');
    if (colon) {
        const char *hash = colon + 1;
        if (colon == s || !known_hash(hash)) {
            weir__cfg_err_at(ld, line,
                             "'authorizations' in [%s]: an htpasswd line must be user:HASH with a "
                             "bcrypt ($2y$), SHA-512 ($6$), SHA-256 ($5$) or yescrypt ($y$) hash",
                             section);
            return false;
        }
        /* A hash crypt cannot read would refuse everyone: check it now. */
        struct crypt_data cd;
        memset(&cd, 0, sizeof(cd));
        const char *r = crypt_rn("probe", hash, &cd, sizeof(cd));
        if (!r || r[0] == '*') {
            weir__cfg_err_at(ld, line, "'authorizations' in [%s]: user '%.*s': malformed hash",
                             section, (int)(colon - s), s);
            return false;
        }
        e->user = strndup(s, (size_t)(colon - s));
        e->value = strdup(hash);
        e->len = e->value ? strlen(e->value) : 0;
    } else {
        unsigned char buf[MAX_CREDENTIAL];
        long n = b64_decode(s, strlen(s), buf, sizeof(buf));
        if (n < 0 || !memchr(buf, ':', (size_t)n)) {
            weir__cfg_err_at(ld, line,
                             "'authorizations' in [%s]: '%s' is neither base64 of user:password "
                             "nor an htpasswd line",
                             section, s);
            return false;
        }
        e->value = malloc((size_t)n);
        if (e->value)
            memcpy(e->value, buf, (size_t)n);
        e->len = (size_t)n;
        OPENSSL_cleanse(buf, sizeof(buf));
    }
    if (!e->value || (colon && !e->user)) {
        weir__cfg_err_at(ld, line, "out of memory");
        return false;
    }
    c->n++;
    return true;
}

static bool basic_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    basic_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    size_t n = 0;
    int line = weir_toml_line(t);
    char **list = weir__cfg_get_string_list(ld, t, "authorizations", section, &n, &line);
    if (!list || n == 0) {
        weir__cfg_err_at(ld, line, "[%s] needs 'authorizations', a list of credentials", section);
        n = 0;
    }
    c->v = calloc(n ? n : 1, sizeof(*c->v));
    for (size_t i = 0; list && c->v && i < n; i++)
        add_entry(ld, c, list[i], line, section);
    for (size_t i = 0; list && i < n; i++)
        OPENSSL_cleanse(list[i], strlen(list[i]));
    weir__cfg_free_list(list, n);
    bool present;
    char *realm = weir__cfg_dup_string(ld, t, "realm", section, &present);
    const char *r = realm ? realm : "weir";
    for (const char *p = r; *p; p++) {
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f) {
            weir__cfg_err_at(ld, line,
                             "'realm' in [%s] may not hold quotes, backslashes or "
                             "control characters",
                             section);
            break;
        }
    }
    size_t cl = strlen(r) + 40;
    c->challenge = malloc(cl);
    if (c->challenge)
        snprintf(c->challenge, cl, "Basic realm=\"%s\", charset=\"UTF-8\"", r);
    free(realm);
    weir__cfg_get_bool(ld, t, "hide_credentials", section, &c->hide);
    weir__cfg_get_duration(ld, t, "delay", section, 60000, true, &c->delay_ms);
    return c->challenge != NULL;
}

/* Whether cred ("user:password", len bytes) is allowed. */
static bool allowed(const basic_conf *c, const unsigned char *cred, size_t len)
{
    const unsigned char *colon = memchr(cred, ':', len);
    if (!colon)
        return false;
    size_t ulen = (size_t)(colon - cred);
    bool ok = false;
    /* Every plain entry, without stopping at a match. */
    for (size_t i = 0; i < c->n; i++) {
        const entry *e = &c->v[i];
        if (!e->user)
            ok |= e->len == len && CRYPTO_memcmp(e->value, cred, len) == 0;
    }
    if (ok)
        return true;
    for (size_t i = 0; i < c->n; i++) {
        const entry *e = &c->v[i];
        if (!e->user || strlen(e->user) != ulen || memcmp(e->user, cred, ulen) != 0)
            continue;
        char pass[MAX_CREDENTIAL + 1];
        size_t plen = len - ulen - 1;
        if (memchr(colon + 1, '\0', plen))
            return false; /* crypt would stop at the NUL */
        memcpy(pass, colon + 1, plen);
        pass[plen] = '\0';
        struct crypt_data *cd = calloc(1, sizeof(*cd)); /* 32 KiB: not on the stack */
        const char *h = cd ? crypt_rn(pass, e->value, cd, sizeof(*cd)) : NULL;
        ok = h && strlen(h) == e->len && CRYPTO_memcmp(h, e->value, e->len) == 0;
        if (cd) {
            OPENSSL_cleanse(cd, sizeof(*cd));
            free(cd);
        }
        OPENSSL_cleanse(pass, sizeof(pass));
        return ok;
    }
    return false;
}

static weir_phase_result refuse(weir_session *s, const basic_conf *c)
{
    static const char body[] = "401 Unauthorized\n";
    weir_header h[2] = {{WEIR_STR("WWW-Authenticate"), {c->challenge, strlen(c->challenge)}},
                        {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
    if (weir_session_respond(s, 401, h, 2, body, sizeof(body) - 1) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static void delayed(weir_session *s, void *ctx)
{
    (void)ctx;
    const weir_plugin *p = weir__plugin_parked(s);
    weir__plugin_resume(s, p ? refuse(s, p->conf) : WEIR_PHASE_ERROR);
}

/* The credentials of an Authorization field, decoded into buf: its length,
 * or -1 when there are none or they are malformed. */
static long credentials(weir_str v, unsigned char *buf, size_t cap)
{
    if (v.len < 6 || strncasecmp(v.ptr, "basic", 5) != 0 || (v.ptr[5] != ' ' && v.ptr[5] != '\t'))
        return -1;
    size_t i = 6;
    while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t'))
        i++;
    return b64_decode(v.ptr + i, v.len - i, buf, cap);
}

static weir_phase_result basic_request(weir_plugin_call *call)
{
    const basic_conf *c = call->plugin->conf;
    weir_session *s = call->s;
    weir_headers *h = weir_session_req_headers(s);
    /* Exactly one Authorization field: two are two opinions. */
    weir_str v = {0};
    size_t fields = 0;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len == 13 && strncasecmp(f.name.ptr, "authorization", 13) == 0) {
            v = f.value;
            fields++;
        }
    }
    unsigned char buf[MAX_CREDENTIAL];
    long n = fields == 1 ? credentials(v, buf, sizeof(buf)) : -1;
    bool ok = n > 0 && allowed(c, buf, (size_t)n);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!ok) {
        weir_str ip = weir_session_client_ip(s), id = weir_session_request_id(s);
        weir_log(WEIR_LEVEL_INFO, "client %.*s: basic_auth: 401: %s (request %.*s)", (int)ip.len,
                 ip.ptr,
                 fields == 0  ? "no credentials"
                 : fields > 1 ? "several Authorization fields"
                 : n <= 0     ? "malformed credentials"
                              : "wrong user or password",
                 (int)id.len, id.ptr);
        if (c->delay_ms) {
            weir_session_set_timer(s, c->delay_ms, delayed);
            return WEIR_PHASE_PENDING;
        }
        return refuse(s, c);
    }
    if (c->hide)
        weir_headers_remove(h, "authorization");
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_basic_auth = {
    .category = "basic_auth",
    .keys = (const weir_cfg_key[]){{"authorizations", WEIR_CT_STRINGS, NULL},
                                   {"realm", WEIR_CT_STRING, NULL},
                                   {"hide_credentials", WEIR_CT_BOOLEAN, NULL},
                                   {"delay", WEIR_CT_DURATION, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = basic_parse,
    .free = basic_free,
    .request = basic_request,
};
