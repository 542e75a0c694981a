/*
 * admin.c - the admin API (see admin.h and docs/admin-api.md).
 *
 * A request goes through the phases of the admin service like this:
 *
 *   early_request_filter: route, authenticate; answer errors and
 *       GET /api/health at once; otherwise read the body (PENDING)
 *   body_cb (worker): parse and check the input; answer reads and bad
 *       input (resume ANSWERED), or queue a job for the main thread
 *   job_main (main thread): reload / validate / change membership, store
 *       the outcome in the job, resume CONTINUE
 *   request_filter (worker): write the job's outcome (ANSWERED)
 *
 * The job is heap memory owned by the request; the main thread writes it
 * only before weir_session_resume and never touches the session itself,
 * so session memory stays with its worker.
 */
#include "app/admin/admin.h"
#include "app/admin/metrics.h"
#include "app/admin/toml_edit.h"
#include "app/admin/ui.h"
#include "app/etcd/source.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "weir/addr.h"

#define BODY_MAX (1024 * 1024)
#define NAME_MAX_LEN 256

struct weir_admin {
    weir_app *app;
    weir_server *srv;
    const char *config_path; /* NULL: no -c, nothing to reload or persist */
    weir_etcd_source *etcd;  /* the config is etcd's: reloads and writes go there */
};

typedef enum admin_op {
    OP_NONE,
    OP_HEALTH,         /* GET /api/health */
    OP_CONFIG,         /* GET /api/config */
    OP_SCHEMA,         /* GET /api/schema */
    OP_STATUS,         /* GET /api/status */
    OP_VALIDATE,       /* POST /api/config/validate */
    OP_RELOAD,         /* POST /api/reload */
    OP_UPSTREAMS,      /* GET /api/upstreams */
    OP_UPSTREAM_GET,   /* GET /api/upstreams/NAME */
    OP_UPSTREAM_PUT,   /* PUT /api/upstreams/NAME */
    OP_BACKEND_ADD,    /* POST /api/upstreams/NAME/backends */
    OP_BACKEND_DELETE, /* DELETE /api/upstreams/NAME/backends/ADDR */
    OP_BACKEND_PATCH,  /* PATCH /api/upstreams/NAME/backends/ADDR */
    OP_CACHE_GET,      /* GET /api/cache */
    OP_CACHE_PURGE,    /* DELETE /api/cache?key=K | prefix=P [&storage=NAME] */
    OP_FLEET,          /* GET /api/fleet */
    OP_FILE_GET,       /* GET /api/config/file */
    OP_FILE_PUT,       /* PUT /api/config/file */
    OP_DIFF,           /* POST /api/config/diff */
    OP_HISTORY,        /* GET /api/config/history */
    OP_HISTORY_GET,    /* GET /api/config/history/ID */
    OP_ROLLBACK,       /* POST /api/config/history/ID/rollback */
    OP_SECTIONS,       /* GET /api/config/sections */
    OP_SECTION_GET,    /* GET /api/config/sections/KIND[/NAME] */
    OP_SECTION_PUT,    /* PUT ... */
    OP_SECTION_DELETE, /* DELETE ... */
} admin_op;

typedef struct backend_spec {
    char addr[WEIR_ADDR_STRLEN]; /* canonical "ip:port" */
    uint32_t weight;
} backend_spec;

/*
 * Work for the main thread and its outcome. Owned by the request: freed by
 * request_filter after answering, or by free_ctx. The main thread writes
 * it only before resuming the session.
 */
typedef struct job {
    weir_admin *adm;
    weir_session *s; /* only for weir_session_resume */
    admin_op op;
    char name[NAME_MAX_LEN];
    char addr[WEIR_ADDR_STRLEN];
    backend_spec *specs; /* PUT, or the one backend of POST */
    size_t n_specs;
    bool has_weight, has_drain, drain;
    uint32_t weight;
    char *text; /* validate, file PUT, diff: the TOML */
    size_t text_len;
    char base[65]; /* file PUT, rollback: the sha256 the file must have ("": any) */
    long id;       /* a history entry */
    /* a section: its kind, its name ("" for basic and admin), the new
     * values (PUT) and the base its answer must match (either: NULL) */
    char kind[16];
    char sect[NAME_MAX_LEN];
    json_t *values, *sect_base;
    bool dry_run;
    /* the outcome */
    int status;
    char *body; /* JSON text */
} job;

/* Per request, in session memory (worker only). */
typedef struct admin_req {
    weir_admin *adm;
    weir_config *cfg; /* pinned for the request */
    admin_op op;
    char name[NAME_MAX_LEN];
    char addr[NAME_MAX_LEN];
    char kind[16]; /* a section's */
    job *job;
} admin_req;

static void job_free(job *j)
{
    if (!j)
        return;
    free(j->specs);
    free(j->text);
    free(j->body);
    json_decref(j->values);
    json_decref(j->sect_base);
    free(j);
}

/* ---- JSON helpers ---- */

static json_t *error_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *error_json(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:o}", "error", weir__admin_text_json(msg, strlen(msg)));
}

/* Serializes j (reference stolen) with a trailing newline; NULL on OOM. */
static char *dump(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    return out;
}

/* Answers with JSON text (NULL: a fixed 500). Worker. */
static weir_phase_result respond_text(weir_session *s, int status, const char *text,
                                      const char *allow)
{
    static const char oom[] = "{\"error\": \"out of memory\"}\n";
    if (!text) {
        status = 500;
        text = oom;
    }
    weir_header h[WEIR_ADMIN_N_SECURITY_HEADERS + 3] = {
        WEIR_ADMIN_SECURITY_HEADERS,
        {WEIR_STR("Content-Type"), WEIR_STR("application/json")},
        {WEIR_STR("Cache-Control"), WEIR_STR("no-store")}};
    size_t n = WEIR_ADMIN_N_SECURITY_HEADERS + 2;
    if (status == 401)
        h[n++] = (weir_header){WEIR_STR("WWW-Authenticate"), WEIR_STR("Bearer")};
    else if (status == 405 && allow)
        h[n++] = (weir_header){WEIR_STR("Allow"), {allow, strlen(allow)}};
    if (weir_session_respond(s, status, h, n, text, strlen(text)) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static weir_phase_result respond_json(weir_session *s, int status, json_t *j, const char *allow)
{
    char *text = dump(j);
    weir_phase_result rc = respond_text(s, status, text, allow);
    free(text);
    return rc;
}

/* ---- auth ---- */

bool weir__admin_token_equal(const char *given, size_t given_len, const char *expected,
                             size_t expected_len)
{
    /* On a length mismatch compare expected with itself, so the time spent
     * does not depend on where the bytes differ. */
    const char *a = given_len == expected_len ? given : expected;
    volatile unsigned char diff = given_len == expected_len ? 0 : 1;
    for (size_t i = 0; i < expected_len; i++)
        diff |= (unsigned char)(a[i] ^ expected[i]);
    return diff == 0;
}

static bool authorized(weir_session *s, const char *token)
{
    if (!token)
        return true; /* loopback without a token (config check allows it) */
    weir_str v = weir_headers_get(weir_session_req_headers(s), "authorization");
    if (!v.ptr || v.len < 7 || strncasecmp(v.ptr, "Bearer ", 7) != 0)
        return false;
    const char *p = v.ptr + 7, *end = v.ptr + v.len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return weir__admin_token_equal(p, (size_t)(end - p), token, strlen(token));
}

/* Host is an address literal (or localhost), with or without a port. */
static bool host_is_literal(weir_str h)
{
    char buf[80];
    if (h.len == 0 || h.len >= sizeof(buf))
        return false;
    memcpy(buf, h.ptr, h.len);
    buf[h.len] = '\0';
    char *host = buf, *end;
    if (buf[0] == '[') {
        end = strchr(buf, ']');
        if (!end || (end[1] && end[1] != ':'))
            return false;
        *end = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, buf + 1, &a6) == 1;
    }
    if ((end = strrchr(buf, ':')))
        *end = '\0';
    struct in_addr a4;
    return strcasecmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &a4) == 1;
}

/*
 * What a browser can be made to send: a page of another site posting to
 * this listener (its Origin is not this listener's), or, with no token
 * (loopback only), reading it through a name that resolves to 127.0.0.1
 * (DNS rebinding: the Host is that name). NULL, or why it is refused.
 */
static const char *browser_refusal(weir_session *s, const char *token)
{
    const weir_headers *h = weir_session_req_headers(s);
    weir_str host = weir_headers_get(h, "host"), origin = weir_headers_get(h, "origin");
    if (origin.ptr) {
        bool same = host.ptr && origin.len == 7 + host.len &&
                    strncasecmp(origin.ptr, "http://", 7) == 0 &&
                    strncasecmp(origin.ptr + 7, host.ptr, host.len) == 0;
        if (!same)
            return "a request from another site's page (its Origin is not this listener) is "
                   "refused";
    }
    if (!token && !host_is_literal(host))
        return "without a token only an address (or localhost) may name this listener in Host: "
               "another name may be a page's DNS rebinding";
    return NULL;
}

/* ---- routing ---- */

static bool method_is(weir_str m, const char *name)
{
    return m.len == strlen(name) && memcmp(m.ptr, name, m.len) == 0;
}

/* Percent-decodes a path segment into out (NUL-terminated). */
static bool decode_segment(const char *p, size_t len, char *out, size_t out_len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            if (i + 2 >= len)
                return false;
            int v = 0;
            for (int k = 1; k <= 2; k++) {
                char h = p[i + (size_t)k];
                v <<= 4;
                if (h >= '0' && h <= '9')
                    v |= h - '0';
                else if (h >= 'a' && h <= 'f')
                    v |= h - 'a' + 10;
                else if (h >= 'A' && h <= 'F')
                    v |= h - 'A' + 10;
                else
                    return false;
            }
            c = (unsigned char)v;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || n + 1 >= out_len)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return n > 0;
}

/*
 * Finds the endpoint of method + path: fills r->op (and name/addr).
 * Returns 0, 400 (bad encoding), 404 or 405 (*allow says what is).
 */
static int route(weir_str method, weir_str path, admin_req *r, const char **allow)
{
    static const char prefix[] = "/api/";
    if (path.len < sizeof(prefix) - 1 || memcmp(path.ptr, prefix, sizeof(prefix) - 1) != 0)
        return 404;
    /* Split the rest on '/': at most 4 segments matter. */
    weir_str seg[5];
    size_t n = 0;
    const char *p = path.ptr + sizeof(prefix) - 1, *end = path.ptr + path.len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash ? slash : end;
        if (n == 5)
            return 404;
        seg[n++] = (weir_str){p, (size_t)(stop - p)};
        if (!slash)
            break;
        p = slash + 1;
    }
#define SEG(i, lit) (seg[i].len == sizeof(lit) - 1 && memcmp(seg[i].ptr, lit, seg[i].len) == 0)
    admin_op get = OP_NONE, put = OP_NONE, post = OP_NONE, del = OP_NONE, patch = OP_NONE;
    if (n == 1 && SEG(0, "health")) {
        get = OP_HEALTH;
        *allow = "GET";
    } else if (n == 1 && SEG(0, "config")) {
        get = OP_CONFIG;
        *allow = "GET";
    } else if (n == 1 && SEG(0, "status")) {
        get = OP_STATUS;
        *allow = "GET";
    } else if (n == 1 && SEG(0, "schema")) {
        get = OP_SCHEMA;
        *allow = "GET";
    } else if (n == 2 && SEG(0, "config") && SEG(1, "validate")) {
        post = OP_VALIDATE;
        *allow = "POST";
    } else if (n == 2 && SEG(0, "config") && SEG(1, "file")) {
        get = OP_FILE_GET;
        put = OP_FILE_PUT;
        *allow = "GET, PUT";
    } else if (n == 2 && SEG(0, "config") && SEG(1, "diff")) {
        post = OP_DIFF;
        *allow = "POST";
    } else if (n == 2 && SEG(0, "config") && SEG(1, "history")) {
        get = OP_HISTORY;
        *allow = "GET";
    } else if ((n == 3 || (n == 4 && SEG(3, "rollback"))) && SEG(0, "config") &&
               SEG(1, "history")) {
        bool digits = seg[2].len > 0 && seg[2].len < 12 && seg[2].ptr[0] != '0';
        for (size_t k = 0; digits && k < seg[2].len; k++)
            digits = seg[2].ptr[k] >= '0' && seg[2].ptr[k] <= '9';
        if (!digits)
            return 404;
        memcpy(r->name, seg[2].ptr, seg[2].len);
        r->name[seg[2].len] = '\0';
        get = n == 3 ? OP_HISTORY_GET : OP_NONE;
        post = n == 4 ? OP_ROLLBACK : OP_NONE;
        *allow = n == 3 ? "GET" : "POST";
    } else if (n == 2 && SEG(0, "config") && SEG(1, "sections")) {
        get = OP_SECTIONS;
        *allow = "GET";
    } else if ((n == 3 || n == 4) && SEG(0, "config") && SEG(1, "sections")) {
        bool has_name;
        if (seg[2].len >= sizeof(r->kind))
            return 404;
        memcpy(r->kind, seg[2].ptr, seg[2].len);
        r->kind[seg[2].len] = '\0';
        if (!weir__admin_section_kind(r->kind, &has_name) || has_name != (n == 4))
            return 404;
        if (n == 4 && !decode_segment(seg[3].ptr, seg[3].len, r->addr, sizeof(r->addr)))
            return seg[3].len ? 400 : 404;
        get = OP_SECTION_GET;
        put = OP_SECTION_PUT;
        del = OP_SECTION_DELETE;
        *allow = "GET, PUT, DELETE";
    } else if (n == 1 && SEG(0, "reload")) {
        post = OP_RELOAD;
        *allow = "POST";
    } else if (n == 1 && SEG(0, "fleet")) {
        get = OP_FLEET;
        *allow = "GET";
    } else if (n == 1 && SEG(0, "cache")) {
        get = OP_CACHE_GET;
        del = OP_CACHE_PURGE;
        *allow = "GET, DELETE";
    } else if (n == 1 && SEG(0, "upstreams")) {
        get = OP_UPSTREAMS;
        *allow = "GET";
    } else if (n >= 2 && SEG(0, "upstreams")) {
        if (!decode_segment(seg[1].ptr, seg[1].len, r->name, sizeof(r->name)))
            return seg[1].len ? 400 : 404;
        if (n == 2) {
            get = OP_UPSTREAM_GET;
            put = OP_UPSTREAM_PUT;
            *allow = "GET, PUT";
        } else if (n == 3 && SEG(2, "backends")) {
            post = OP_BACKEND_ADD;
            *allow = "POST";
        } else if (n == 4 && SEG(2, "backends")) {
            if (!decode_segment(seg[3].ptr, seg[3].len, r->addr, sizeof(r->addr)))
                return seg[3].len ? 400 : 404;
            del = OP_BACKEND_DELETE;
            patch = OP_BACKEND_PATCH;
            *allow = "DELETE, PATCH";
        } else {
            return 404;
        }
    } else {
        return 404;
    }
#undef SEG
    r->op = method_is(method, "GET")      ? get
            : method_is(method, "PUT")    ? put
            : method_is(method, "POST")   ? post
            : method_is(method, "DELETE") ? del
            : method_is(method, "PATCH")  ? patch
                                          : OP_NONE;
    return r->op == OP_NONE ? 405 : 0;
}

/* ---- input checks (worker) ---- */

/* The body as a JSON object, or NULL with the reason in err. */
static json_t *parse_object(weir_str body, char *err, size_t err_len)
{
    json_error_t je;
    json_t *j = json_loadb(body.ptr ? body.ptr : "", body.len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        snprintf(err, err_len, "malformed JSON: %s (line %d, column %d)", je.text, je.line,
                 je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        snprintf(err, err_len, "the body must be a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

static bool only_fields(json_t *o, const char *const *known, char *err, size_t err_len)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok) {
            snprintf(err, err_len, "unknown field '%.64s'", key);
            return false;
        }
    }
    return true;
}

/* A numeric "ip:port" (port 1..65535, not a wildcard) in canonical form. */
static bool canon_addr(const char *text, char *out, size_t out_len)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (strlen(text) >= WEIR_ADDR_STRLEN || weir_addr_parse(text, &ss, &len) < 0)
        return false;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&ss;
        if (a->sin_port == 0 || a->sin_addr.s_addr == htonl(INADDR_ANY))
            return false;
    } else {
        const struct sockaddr_in6 *a = (const void *)&ss;
        if (a->sin6_port == 0 || IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
            return false;
    }
    weir_addr_format((const struct sockaddr *)&ss, out, out_len);
    return true;
}

static bool get_weight(json_t *o, uint32_t *out, bool *present, char *err, size_t err_len)
{
    json_t *w = json_object_get(o, "weight");
    *present = w != NULL;
    if (!w)
        return true;
    json_int_t v = json_is_integer(w) ? json_integer_value(w) : 0;
    if (v < 1 || v > 10000) {
        snprintf(err, err_len, "'weight' must be an integer from 1 to 10000");
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* {"addr": "ip:port", "weight": N} */
static bool parse_spec(json_t *o, backend_spec *b, char *err, size_t err_len)
{
    static const char *const fields[] = {"addr", "weight", NULL};
    if (!json_is_object(o)) {
        snprintf(err, err_len, "a backend must be an object {\"addr\": \"ip:port\"}");
        return false;
    }
    if (!only_fields(o, fields, err, err_len))
        return false;
    json_t *a = json_object_get(o, "addr");
    if (!json_is_string(a)) {
        snprintf(err, err_len, "'addr' must be a string \"ip:port\"");
        return false;
    }
    if (!canon_addr(json_string_value(a), b->addr, sizeof(b->addr))) {
        snprintf(err, err_len, "invalid address '%.64s': expected a numeric \"ip:port\"",
                 json_string_value(a));
        return false;
    }
    bool present;
    b->weight = 1;
    return get_weight(o, &b->weight, &present, err, err_len);
}

/* {"text": TOML, "base": sha256} of a file PUT (text required, base not),
 * a diff (text only) or a rollback (base only). */
static bool parse_text(job *j, json_t *o, char *err, size_t err_len)
{
    static const char *const put[] = {"text", "base", NULL}, *const diff[] = {"text", NULL},
                             *const rollback[] = {"base", NULL};
    if (!only_fields(o,
                     j->op == OP_FILE_PUT ? put
                     : j->op == OP_DIFF   ? diff
                                          : rollback,
                     err, err_len))
        return false;
    json_t *b = json_object_get(o, "base");
    if (b && (!json_is_string(b) || json_string_length(b) != 64 ||
              strspn(json_string_value(b), "0123456789abcdef") != 64)) {
        snprintf(err, err_len, "'base' must be the file's sha256 (64 hex digits, lower case)");
        return false;
    }
    if (b)
        memcpy(j->base, json_string_value(b), 65);
    if (j->op == OP_ROLLBACK)
        return true;
    json_t *t = json_object_get(o, "text");
    if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t)) {
        snprintf(err, err_len, "'text' must be the configuration's TOML, a string without NUL");
        return false;
    }
    j->text_len = json_string_length(t);
    j->text = strdup(json_string_value(t));
    if (!j->text) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    return true;
}

/* Fills the job from the request body; false with err (a 400). */
static bool parse_input(job *j, admin_req *r, weir_str body, char *err, size_t err_len)
{
    static const char *const put_fields[] = {"backends", NULL};
    static const char *const patch_fields[] = {"weight", "drain", NULL};
    static const char *const none[] = {NULL};
    snprintf(j->name, sizeof(j->name), "%s", r->name);
    if (j->op == OP_VALIDATE) {
        j->text = malloc(body.len + 1);
        if (!j->text) {
            snprintf(err, err_len, "out of memory");
            return false;
        }
        memcpy(j->text, body.ptr ? body.ptr : "", body.len);
        j->text[body.len] = '\0';
        j->text_len = body.len;
        return true;
    }
    if (j->op == OP_BACKEND_DELETE || j->op == OP_BACKEND_PATCH) {
        if (!canon_addr(r->addr, j->addr, sizeof(j->addr))) {
            snprintf(err, err_len, "invalid address '%.64s': expected a numeric \"ip:port\"",
                     r->addr);
            return false;
        }
    }
    j->id = strtol(j->name, NULL, 10);
    if (j->op == OP_SECTION_GET || j->op == OP_SECTION_PUT || j->op == OP_SECTION_DELETE) {
        memcpy(j->kind, r->kind, sizeof(j->kind));
        memcpy(j->sect, r->addr, sizeof(j->sect));
        if (j->op == OP_SECTION_GET || (j->op == OP_SECTION_DELETE && body.len == 0))
            return true;
    }
    /* Body-less operations take no body, or an empty object. */
    if (j->op == OP_FLEET || j->op == OP_FILE_GET || j->op == OP_HISTORY ||
        j->op == OP_HISTORY_GET || j->op == OP_STATUS || j->op == OP_SECTIONS)
        return true;
    if ((j->op == OP_RELOAD || j->op == OP_BACKEND_DELETE || j->op == OP_ROLLBACK) && body.len == 0)
        return true;
    json_t *o = parse_object(body, err, err_len);
    if (!o)
        return false;
    bool ok = false;
    switch (j->op) {
    case OP_RELOAD:
    case OP_BACKEND_DELETE:
        ok = only_fields(o, none, err, err_len);
        break;
    case OP_FILE_PUT:
    case OP_DIFF:
    case OP_ROLLBACK:
        ok = parse_text(j, o, err, err_len);
        break;
    case OP_SECTION_PUT:
    case OP_SECTION_DELETE: {
        static const char *const put[] = {"values", "base", "dry_run", NULL}, *const del[] = {
                                                                                  "base", "dry_run",
                                                                                  NULL};
        if (!only_fields(o, j->op == OP_SECTION_PUT ? put : del, err, err_len))
            break;
        j->values = json_incref(json_object_get(o, "values"));
        j->sect_base = json_incref(json_object_get(o, "base"));
        json_t *dry = json_object_get(o, "dry_run");
        if (dry && !json_is_boolean(dry)) {
            snprintf(err, err_len, "'dry_run' must be true or false");
            break;
        }
        j->dry_run = json_is_true(dry);
        if (j->op == OP_SECTION_PUT && !json_is_object(j->values)) {
            snprintf(err, err_len, "'values' must be an object of the section's keys");
            break;
        }
        ok = true;
        break;
    }
    case OP_BACKEND_ADD:
        j->specs = calloc(1, sizeof(*j->specs));
        if (!j->specs) {
            snprintf(err, err_len, "out of memory");
            break;
        }
        j->n_specs = 1;
        ok = parse_spec(o, &j->specs[0], err, err_len);
        break;
    case OP_BACKEND_PATCH: {
        if (!only_fields(o, patch_fields, err, err_len) ||
            !get_weight(o, &j->weight, &j->has_weight, err, err_len))
            break;
        json_t *d = json_object_get(o, "drain");
        if (d && !json_is_boolean(d)) {
            snprintf(err, err_len, "'drain' must be true or false");
            break;
        }
        j->has_drain = d != NULL;
        j->drain = d && json_is_true(d);
        if (!j->has_weight && !j->has_drain) {
            snprintf(err, err_len, "nothing to change: give 'weight' and/or 'drain'");
            break;
        }
        ok = true;
        break;
    }
    case OP_UPSTREAM_PUT: {
        if (!only_fields(o, put_fields, err, err_len))
            break;
        json_t *a = json_object_get(o, "backends");
        if (!json_is_array(a)) {
            snprintf(err, err_len, "'backends' must be an array of {\"addr\", \"weight\"}");
            break;
        }
        size_t n = json_array_size(a);
        if (n > WEIR_UPSTREAM_MAX_BACKENDS) {
            snprintf(err, err_len, "at most %d backends", WEIR_UPSTREAM_MAX_BACKENDS);
            break;
        }
        j->specs = calloc(n ? n : 1, sizeof(*j->specs));
        if (!j->specs) {
            snprintf(err, err_len, "out of memory");
            break;
        }
        ok = true;
        for (size_t i = 0; ok && i < n; i++) {
            ok = parse_spec(json_array_get(a, i), &j->specs[i], err, err_len);
            for (size_t k = 0; ok && k < i; k++) {
                if (strcmp(j->specs[k].addr, j->specs[i].addr) == 0) {
                    snprintf(err, err_len, "backend %s is listed twice", j->specs[i].addr);
                    ok = false;
                }
            }
        }
        j->n_specs = n;
        break;
    }
    default:
        snprintf(err, err_len, "unexpected operation");
        break;
    }
    json_decref(o);
    return ok;
}

/* ---- upstream state as JSON (any thread) ---- */

static const char *breaker_name(weir_breaker_state b)
{
    return b == WEIR_BREAKER_OPEN ? "open" : b == WEIR_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

/* The members of u; *n their count. NULL on OOM (or none). */
static weir_backend_info *members(const weir_cfg_upstream *u, size_t *n)
{
    *n = 0;
    if (!u->lb)
        return NULL;
    size_t want = weir_upstream_info(u->lb, NULL, 0) + 16; /* room for a concurrent add */
    weir_backend_info *v = calloc(want, sizeof(*v));
    if (!v)
        return NULL;
    size_t got = weir_upstream_info(u->lb, v, want);
    *n = got < want ? got : want;
    return v;
}

/* A wall-clock ms time as RFC 3339 UTC, or null for 0. */
static json_t *time_json(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char buf[40];
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}

static json_t *discovery_json(const weir_discovery_info *d)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:s}", "kind", d->kind,
                     "rounds", (json_int_t)d->rounds, "failures", (json_int_t)d->failures,
                     "consecutive_failures", (json_int_t)d->consecutive_failures, "changes",
                     (json_int_t)d->changes, "added", (json_int_t)d->added, "removed",
                     (json_int_t)d->removed, "last_success", time_json(d->last_success_ms),
                     "last_failure", time_json(d->last_failure_ms), "next_round",
                     time_json(d->next_round_ms), "last_error", d->last_error);
}

static json_t *upstream_live_json(const weir_cfg_upstream *u)
{
    char algo[300];
    weir__admin_algo_text(u, algo, sizeof(algo));
    size_t n;
    weir_backend_info *v = members(u, &n);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        const weir_backend_info *b = &v[i];
        json_t *o = json_pack(
            "{s:s, s:I, s:b, s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "addr", b->addr, "weight",
            (json_int_t)b->weight, "healthy", (int)b->healthy, "draining", (int)b->draining,
            "breaker", breaker_name(b->breaker), "in_flight", (json_int_t)b->in_flight, "requests",
            (json_int_t)b->requests, "failures", (json_int_t)b->failures, "conns_new",
            (json_int_t)b->conns_new, "conns_reused", (json_int_t)b->conns_reused, "health_changes",
            (json_int_t)b->health_changes);
        json_array_append_new(arr, o);
    }
    free(v);
    json_t *o = json_pack("{s:s, s:s, s:o}", "name", u->name, "algo", algo, "backends", arr);
    weir_discovery_info d;
    if (o && weir_upstream_discovery_info(u->lb, &d))
        json_object_set_new(o, "discovery", discovery_json(&d));
    return o;
}

static weir_cfg_upstream *find_upstream(weir_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_upstreams; i++) {
        if (strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    }
    return NULL;
}

/* ---- main-thread work ---- */

static void set_outcome(job *j, int status, json_t *body)
{
    j->status = status;
    j->body = dump(body);
}

static void do_reload(job *j)
{
    weir_admin *adm = j->adm;
    if (adm->etcd) {
        weir_cfg_errors errs = {0};
        if (weir__etcd_source_reload(adm->etcd, &errs) == WEIR_OK)
            set_outcome(j, 200,
                        json_pack("{s:b, s:s}", "reloaded", 1, "source",
                                  weir__etcd_source_name(adm->etcd)));
        else
            set_outcome(j, 409,
                        json_pack("{s:s, s:o}", "error",
                                  "reload failed: the running configuration stays", "errors",
                                  weir__admin_errors_json(&errs)));
        weir__cfg_errors_free(&errs);
        return;
    }
    if (!adm->config_path) {
        set_outcome(j, 409,
                    error_json("weir runs without a configuration file (-c): nothing to reload"));
        return;
    }
    weir_cfg_errors errs = {0};
    if (weir__app_reload_errs(adm->app, adm->config_path, adm->srv, &errs) == WEIR_OK) {
        weir_config *now = weir__app_config(adm->app);
        if (now)
            weir__admin_history_note(now, adm->config_path, "reload");
        weir__config_unref(now);
        set_outcome(j, 200, json_pack("{s:b, s:s}", "reloaded", 1, "file", adm->config_path));
    } else {
        set_outcome(j, 409,
                    json_pack("{s:s, s:o}", "error",
                              "reload failed: the running configuration stays", "errors",
                              weir__admin_errors_json(&errs)));
    }
    weir__cfg_errors_free(&errs);
}

static void do_validate(job *j)
{
    weir_cfg_errors errs = {0};
    weir_config *c = weir__config_load(j->text, j->text_len, "request", &errs);
    if (c)
        set_outcome(j, 200, json_pack("{s:b}", "valid", 1));
    else if (errs.n == 0)
        set_outcome(j, 500, error_json("out of memory"));
    else
        set_outcome(j, 200,
                    json_pack("{s:b, s:o}", "valid", 0, "errors", weir__admin_errors_json(&errs)));
    weir__config_unref(c);
    weir__cfg_errors_free(&errs);
}

/* The membership after the job, as the file's addrs strings (NULL: none
 * needed). Returns the count, or -1 (status set) when the job is invalid
 * for the current members. */
static long plan(job *j, const weir_backend_info *cur, size_t n_cur, char ***out)
{
    *out = NULL;
    long found = -1;
    for (size_t i = 0; i < n_cur; i++) {
        if (strcmp(cur[i].addr, j->op == OP_BACKEND_ADD ? j->specs[0].addr : j->addr) == 0)
            found = (long)i;
    }
    if (j->op == OP_BACKEND_ADD && found >= 0) {
        set_outcome(
            j, 409,
            error_json("backend %s is already in upstream '%s'", j->specs[0].addr, j->name));
        return -1;
    }
    if ((j->op == OP_BACKEND_DELETE || j->op == OP_BACKEND_PATCH) && found < 0) {
        set_outcome(j, 404, error_json("no backend %s in upstream '%s'", j->addr, j->name));
        return -1;
    }
    if (j->op == OP_BACKEND_ADD && n_cur >= WEIR_UPSTREAM_MAX_BACKENDS) {
        set_outcome(j, 400, error_json("at most %d backends", WEIR_UPSTREAM_MAX_BACKENDS));
        return -1;
    }
    size_t cap = (j->op == OP_UPSTREAM_PUT ? j->n_specs : n_cur + 1) + 1;
    char **v = calloc(cap, sizeof(char *));
    if (!v) {
        set_outcome(j, 500, error_json("out of memory"));
        return -1;
    }
    size_t n = 0;
    bool oom = false;
#define ADD_ADDR(a, w)                                                                             \
    do {                                                                                           \
        if ((w) == 1 ? !(v[n] = strdup(a)) : asprintf(&v[n], "%s %u", (a), (unsigned)(w)) < 0) {   \
            v[n] = NULL;                                                                           \
            oom = true;                                                                            \
        } else {                                                                                   \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    if (j->op == OP_UPSTREAM_PUT) {
        for (size_t i = 0; i < j->n_specs; i++)
            ADD_ADDR(j->specs[i].addr, j->specs[i].weight);
    } else {
        for (size_t i = 0; i < n_cur; i++) {
            if (j->op == OP_BACKEND_DELETE && (long)i == found)
                continue;
            uint32_t w = cur[i].weight;
            if (j->op == OP_BACKEND_PATCH && (long)i == found && j->has_weight)
                w = j->weight;
            ADD_ADDR(cur[i].addr, w);
        }
        if (j->op == OP_BACKEND_ADD)
            ADD_ADDR(j->specs[0].addr, j->specs[0].weight);
    }
#undef ADD_ADDR
    *out = v;
    if (oom) {
        set_outcome(j, 500, error_json("out of memory"));
        return -1;
    }
    return (long)n;
}

static void free_strings(char **v, long n)
{
    for (long i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* Applies the job to u's members; false (status set) on failure. */
static bool apply(job *j, weir_cfg_upstream *u)
{
    weir_upstream *lb = u->lb;
    int rc = WEIR_OK;
    switch (j->op) {
    case OP_BACKEND_ADD:
        rc = weir_upstream_add(lb, j->specs[0].addr, j->specs[0].weight);
        break;
    case OP_BACKEND_DELETE:
        rc = weir_upstream_remove(lb, j->addr);
        break;
    case OP_BACKEND_PATCH:
        if (j->has_weight)
            rc = weir_upstream_set_weight(lb, j->addr, j->weight);
        if (rc == WEIR_OK && j->has_drain)
            rc = weir_upstream_set_drain(lb, j->addr, j->drain);
        break;
    case OP_UPSTREAM_PUT: {
        /* One change set: additions and weights first, removals last. */
        weir_lb_target *v = calloc(j->n_specs ? j->n_specs : 1, sizeof(*v));
        if (!v) {
            rc = WEIR_ERR_NOMEM;
            break;
        }
        for (size_t i = 0; i < j->n_specs; i++) {
            snprintf(v[i].addr, sizeof(v[i].addr), "%s", j->specs[i].addr);
            v[i].weight = j->specs[i].weight;
        }
        rc = weir_upstream_update(lb, v, j->n_specs, NULL);
        free(v);
        break;
    }
    default:
        break;
    }
    if (rc != WEIR_OK) {
        set_outcome(j, 500,
                    error_json("changing upstream '%s' failed (%s)", j->name,
                               rc == WEIR_ERR_NOMEM ? "out of memory" : "rejected"));
        return false;
    }
    return true;
}

static void do_membership(job *j)
{
    weir_admin *adm = j->adm;
    /* Main thread: the only one that swaps snapshots, so this stays current
     * while the job runs. */
    weir_config *cfg = weir__app_config(adm->app);
    weir_cfg_upstream *u = find_upstream(cfg, j->name);
    char **addrs = NULL;
    long n_addrs = 0;
    char *old = NULL, *text = NULL;
    size_t old_len = 0, text_len = 0;
    weir_backend_info *cur = NULL;
    size_t n_cur = 0;
    if (!u || !u->lb) {
        set_outcome(j, 404, error_json("no upstream '%s'", j->name));
        goto out;
    }
    if (u->discovery != WEIR_CFG_DISCOVERY_STATIC && (j->op != OP_BACKEND_PATCH || j->has_weight)) {
        /* The next round would undo it. Draining is the operator's. */
        set_outcome(j, 409,
                    error_json("upstream '%s' takes its backends from %s discovery: change the "
                               "records, or set discovery = \"static\" (draining a backend is "
                               "allowed)",
                               j->name, u->discovery == WEIR_CFG_DISCOVERY_SRV ? "SRV" : "DNS"));
        goto out;
    }
    cur = members(u, &n_cur);
    n_addrs = plan(j, cur, n_cur, &addrs);
    if (n_addrs < 0)
        goto out;
    /* Draining is runtime state: only membership and weights are written. */
    if (adm->etcd && (j->op != OP_BACKEND_PATCH || j->has_weight)) {
        weir__admin_etcd_write(adm->etcd, j->name, (const char *const *)addrs, (size_t)n_addrs,
                               &j->status, &j->body);
        goto out;
    }
    bool persist =
        cfg->admin.persist && adm->config_path && (j->op != OP_BACKEND_PATCH || j->has_weight);
    char err[600];
    if (persist) {
        old = weir__admin_read_file(adm->config_path, &old_len, err, sizeof(err));
        if (!old ||
            weir__admin_rewrite_addrs(old, old_len, j->name, (const char *const *)addrs,
                                      (size_t)n_addrs, &text, &text_len, err, sizeof(err)) < 0) {
            set_outcome(
                j, 500,
                error_json("cannot persist to %s: %s; nothing was changed", adm->config_path, err));
            goto out;
        }
        /* What is written must load (and run as-is on the next reload). */
        weir_cfg_errors errs = {0};
        weir_config *check = weir__config_load(text, text_len, adm->config_path, &errs);
        if (!check) {
            set_outcome(j, 500,
                        json_pack("{s:s, s:o}", "error",
                                  "the rewritten configuration does not load; nothing was changed",
                                  "errors", weir__admin_errors_json(&errs)));
            weir__cfg_errors_free(&errs);
            goto out;
        }
        weir__config_unref(check);
    }
    if (!apply(j, u))
        goto out;
    json_t *body = upstream_live_json(u);
    if (persist && weir__admin_replace_file(adm->config_path, text, text_len, old, old_len, err,
                                            sizeof(err)) < 0) {
        json_decref(body);
        set_outcome(j, 500, error_json("applied at runtime but not persisted: %s", err));
        goto out;
    }
    if (body)
        json_object_set_new(body, "persisted", json_boolean(persist));
    set_outcome(j, 200, body);
    if (persist)
        weir_log(WEIR_LEVEL_INFO, "admin: upstream %s changed; written to %s", j->name,
                 adm->config_path);
    else
        weir_log(WEIR_LEVEL_INFO, "admin: upstream %s changed at runtime", j->name);
out:
    free_strings(addrs, n_addrs > 0 ? n_addrs : 0);
    free(old);
    free(text);
    free(cur);
    weir__config_unref(cfg);
}

/* One section (sections_api.c): of the file, or etcd's key. */
static void do_section(job *j)
{
    weir_admin *adm = j->adm;
    if (!adm->etcd && !adm->config_path) {
        set_outcome(j, 409, error_json("weir runs without a configuration file (-c)"));
        return;
    }
    const char *name = j->sect[0] ? j->sect : NULL;
    json_t *out = NULL;
    int st;
    if (j->op == OP_SECTIONS)
        st = weir__admin_section_list(adm->app, adm->etcd, &out);
    else if (j->op == OP_SECTION_GET)
        st = weir__admin_section_get(adm->config_path, adm->etcd, j->kind, name, &out);
    else
        st = weir__admin_section_change(adm->app, adm->srv, adm->config_path, adm->etcd, j->kind,
                                        name, j->op == OP_SECTION_PUT ? j->values : NULL,
                                        j->sect_base, j->dry_run, &out);
    set_outcome(j, out ? st : 500, out ? out : error_json("out of memory"));
}

/* The configuration file through the API (config_api.c). */
static void do_file(job *j)
{
    weir_admin *adm = j->adm;
    if (adm->etcd && (j->op == OP_HISTORY || j->op == OP_HISTORY_GET || j->op == OP_ROLLBACK)) {
        weir_config *cfg = weir__app_config(adm->app);
        json_t *out = NULL;
        int st = !cfg                      ? (out = error_json("the server is stopping"), 503)
                 : j->op == OP_HISTORY     ? weir__admin_etcd_history_list(adm->etcd, cfg, &out)
                 : j->op == OP_HISTORY_GET ? weir__admin_etcd_history_get(adm->etcd, j->id, &out)
                                           : weir__admin_etcd_rollback(adm->etcd, cfg, j->id, &out);
        weir__config_unref(cfg);
        set_outcome(j, out ? st : 500, out ? out : error_json("out of memory"));
        return;
    }
    if (adm->etcd && j->op != OP_DIFF) {
        set_outcome(j, 409,
                    error_json("the configuration is in etcd (%s): change its keys there",
                               weir__etcd_source_name(adm->etcd)));
        return;
    }
    weir_config *cfg = weir__app_config(adm->app);
    if (!cfg || (!adm->config_path && j->op != OP_DIFF)) {
        set_outcome(j, 409, error_json("weir runs without a configuration file (-c)"));
        weir__config_unref(cfg);
        return;
    }
    const char *path = adm->config_path, *base = j->base[0] ? j->base : NULL;
    json_t *out = NULL;
    int st = 500;
    switch (j->op) {
    case OP_FILE_GET:
        st = weir__admin_file_get(path, &out);
        break;
    case OP_FILE_PUT:
        st = weir__admin_apply(adm->app, adm->srv, path, j->text, j->text_len, base, "apply", 0,
                               &out);
        break;
    case OP_DIFF:
        st = weir__admin_diff(cfg, j->text, j->text_len, &out);
        break;
    case OP_HISTORY:
        st = weir__admin_history_list(cfg, path, &out);
        break;
    case OP_HISTORY_GET:
        st = weir__admin_history_get(cfg, path, j->id, &out);
        break;
    default:
        st = weir__admin_rollback(adm->app, adm->srv, path, j->id, base, &out);
        break;
    }
    weir__config_unref(cfg);
    set_outcome(j, out ? st : 500, out ? out : error_json("out of memory"));
}

static void noop(void *arg) {}

static void job_main(void *arg)
{
    job *j = arg;
    /* The server runs leftover calls after its workers are gone; the
     * session cannot be resumed then (and the process is exiting). A call
     * is refused exactly once the server stopped running. */
    if (weir_server_call_main(j->adm->srv, noop, NULL) != WEIR_OK)
        return;
    switch (j->op) {
    case OP_RELOAD:
        do_reload(j);
        break;
    case OP_VALIDATE:
        do_validate(j);
        break;
    case OP_STATUS:
        set_outcome(
            j, 200,
            weir__admin_status_json(j->adm->app, j->adm->config_path,
                                    j->adm->etcd ? weir__etcd_source_name(j->adm->etcd) : NULL));
        break;
    case OP_FILE_GET:
    case OP_FILE_PUT:
    case OP_DIFF:
    case OP_HISTORY:
    case OP_HISTORY_GET:
    case OP_ROLLBACK:
        do_file(j);
        break;
    case OP_SECTIONS:
    case OP_SECTION_GET:
    case OP_SECTION_PUT:
    case OP_SECTION_DELETE:
        do_section(j);
        break;
    case OP_FLEET:
        if (j->adm->etcd)
            set_outcome(j, 200, weir__etcd_fleet_json(j->adm->etcd));
        else
            set_outcome(j, 404,
                        error_json("weir runs a configuration file, not one from etcd: no fleet"));
        break;
    default:
        do_membership(j);
        break;
    }
    /* The last touch of j on this thread: the worker owns it again. */
    weir_session_resume(j->s, WEIR_PHASE_CONTINUE);
}

/* ---- the phases ---- */

static void *new_ctx(weir_session *s, void *app)
{
    weir_admin *adm = app;
    admin_req *r = weir_session_alloc(s, sizeof(*r));
    if (!r)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->adm = adm;
    r->cfg = weir__app_config(adm->app);
    return r;
}

static void free_ctx(void *app, void *ctx)
{
    admin_req *r = ctx;
    if (!r)
        return;
    job_free(r->job);
    weir__config_unref(r->cfg);
}

/* Handles the request once its body is read; returns ANSWERED, or PENDING
 * when a job went to the main thread. */
static weir_phase_result handle(weir_session *s, admin_req *r, weir_str body, int error)
{
    if (error == WEIR_ERR_INVAL)
        return respond_json(s, 413, error_json("request body larger than %d bytes", BODY_MAX),
                            NULL);
    if (error < 0)
        return respond_json(s, 400, error_json("cannot read the request body"), NULL);
    switch (r->op) {
    case OP_CONFIG:
        return respond_json(s, 200, weir__config_to_json(r->cfg), NULL);
    case OP_SCHEMA:
        return respond_json(s, 200, weir__schema_json(), NULL);
    case OP_UPSTREAMS: {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < r->cfg->n_upstreams; i++)
            json_array_append_new(arr, upstream_live_json(&r->cfg->upstreams[i]));
        return respond_json(s, 200, json_pack("{s:o}", "upstreams", arr), NULL);
    }
    case OP_CACHE_GET:
        return respond_json(s, 200, weir__admin_cache_json(r->cfg), NULL);
    case OP_CACHE_PURGE: {
        json_t *out = NULL;
        int st = weir__admin_cache_purge(r->cfg, weir_session_query(s), &out);
        return respond_json(s, st, out, NULL);
    }
    case OP_UPSTREAM_GET: {
        weir_cfg_upstream *u = find_upstream(r->cfg, r->name);
        if (!u)
            return respond_json(s, 404, error_json("no upstream '%.200s'", r->name), NULL);
        return respond_json(s, 200, upstream_live_json(u), NULL);
    }
    default:
        break;
    }
    job *j = calloc(1, sizeof(*j));
    if (!j)
        return respond_text(s, 500, NULL, NULL);
    j->adm = r->adm;
    j->s = s;
    j->op = r->op;
    char err[600];
    if (!parse_input(j, r, body, err, sizeof(err))) {
        job_free(j);
        return respond_json(s, 400, error_json("%s", err), NULL);
    }
    r->job = j;
    if (weir_server_call_main(r->adm->srv, job_main, j) != WEIR_OK) {
        r->job = NULL;
        job_free(j);
        return respond_json(s, 503, error_json("the server is stopping"), NULL);
    }
    return WEIR_PHASE_PENDING;
}

static void body_cb(weir_session *s, void *ctx, weir_str body, int error)
{
    weir_phase_result rc = handle(s, ctx, body, error);
    if (rc != WEIR_PHASE_PENDING)
        weir_session_resume(s, rc);
}

/* GET /metrics: the Prometheus text format (on the admin listener). */
static weir_phase_result metrics(weir_session *s, admin_req *r)
{
    size_t len = 0;
    char *text =
        weir__metrics_render(r->cfg, r->adm->srv, weir__app_log_dropped(r->adm->app), &len);
    if (!text)
        return respond_json(s, 500, error_json("out of memory"), NULL);
    weir_header h[] = {WEIR_ADMIN_SECURITY_HEADERS,
                       {WEIR_STR("Content-Type"), WEIR_STR("text/plain; version=0.0.4")},
                       {WEIR_STR("Cache-Control"), WEIR_STR("no-store")}};
    int rc = weir_session_respond(s, 200, h, sizeof(h) / sizeof(h[0]), text, len);
    free(text);
    return rc == WEIR_OK ? WEIR_PHASE_ANSWERED : WEIR_PHASE_ERROR;
}

static weir_phase_result early_request_filter(weir_session *s, void *ctx)
{
    admin_req *r = ctx;
    if (!r)
        return WEIR_PHASE_ERROR;
    weir_phase_result ui;
    if (weir__admin_ui(s, &ui)) /* the page and its files: no token, no data */
        return ui;
    const char *allow = NULL;
    int st = route(weir_session_method(s), weir_session_path(s), r, &allow);
    if (st == 0 && r->op == OP_HEALTH)
        return respond_json(s, 200, json_pack("{s:s}", "status", "ok"), NULL);
    const char *why = browser_refusal(s, r->cfg->admin.token);
    if (why)
        return respond_json(s, 403, error_json("%s", why), NULL);
    if (!authorized(s, r->cfg->admin.token))
        return respond_json(s, 401, error_json("missing or wrong bearer token"), NULL);
    weir_str path = weir_session_path(s);
    if (path.len == 8 && memcmp(path.ptr, "/metrics", 8) == 0) {
        weir_str m = weir_session_method(s);
        if (!(m.len == 3 && memcmp(m.ptr, "GET", 3) == 0))
            return respond_json(s, 405, error_json("method not allowed; use GET"), "GET");
        return metrics(s, r);
    }
    if (st == 400)
        return respond_json(s, 400, error_json("bad percent-encoding in the path"), NULL);
    if (st == 404)
        return respond_json(s, 404, error_json("no such endpoint"), NULL);
    if (st == 405)
        return respond_json(s, 405, error_json("method not allowed; use %s", allow), allow);
    if (weir_session_read_body(s, BODY_MAX, body_cb) != WEIR_OK)
        return respond_text(s, 500, NULL, NULL);
    return WEIR_PHASE_PENDING;
}

/* Runs after a job resumed the request: write its outcome. */
static weir_phase_result request_filter(weir_session *s, void *ctx)
{
    admin_req *r = ctx;
    job *j = r ? r->job : NULL;
    if (!j)
        return WEIR_PHASE_ERROR;
    r->job = NULL;
    weir_phase_result rc = respond_text(s, j->status, j->body, NULL);
    job_free(j);
    return rc;
}

static weir_phase_result upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    return WEIR_PHASE_ERROR; /* every request is answered before */
}

/* Requests the library refuses before any phase (a bad path, a framing
 * trick) get the API's JSON error shape too. */
static weir_phase_result error_while_proxy(weir_session *s, void *ctx, int status,
                                           const char *reason)
{
    return respond_json(s, status, error_json("%s", reason), NULL);
}

static const weir_proxy_ops admin_ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .early_request_filter = early_request_filter,
    .request_filter = request_filter,
    .upstream_peer = upstream_peer,
    .error_while_proxy = error_while_proxy,
};

void weir__admin_set_etcd(weir_admin *adm, weir_etcd_source *src)
{
    adm->etcd = src;
    weir_config *cfg = weir__app_config(adm->app);
    if (cfg && src) /* what runs now can be rolled back to */
        weir__admin_etcd_history_before(src, cfg);
    weir__config_unref(cfg);
}

weir_admin *weir__admin_start(weir_app *app, weir_server *srv, const char *config_path)
{
    weir_config *cfg = weir__app_config(app);
    weir_admin *adm = NULL;
    if (!cfg->admin.addr)
        goto out;
    adm = calloc(1, sizeof(*adm));
    if (!adm)
        goto out;
    adm->app = app;
    adm->srv = srv;
    adm->config_path = config_path;
    const char *addrs[] = {cfg->admin.addr};
    weir_proxy_options opts = {.client_header_timeout_ms = 10000,
                               .client_body_timeout_ms = 10000,
                               .keepalive_timeout_ms = 30000,
                               .send_timeout_ms = 10000,
                               .no_forwarded_headers = true,
                               .no_via = true};
    int rc = weir_server_add_proxy(srv, addrs, 1, &admin_ops, adm, &opts);
    if (rc != WEIR_OK) {
        weir_log(WEIR_LEVEL_ERROR, "[admin]: cannot listen on %s", cfg->admin.addr);
        free(adm);
        adm = NULL;
        goto out;
    }
    weir_log(WEIR_LEVEL_INFO, "admin API on %s%s", cfg->admin.addr,
             cfg->admin.token ? "" : " (no token: loopback only)");
    if (config_path) /* what runs now can be rolled back to */
        weir__admin_history_note(cfg, config_path, "start");
out:
    weir__config_unref(cfg);
    return adm;
}

void weir__admin_free(weir_admin *adm)
{
    free(adm);
}
