/*
 * request_id.c - gives each request an id of a chosen form: uuid (v4,
 * random), uuidv7 (time-ordered) or nanoid (`size` characters of
 * [A-Za-z0-9_-], 21 by default), in `header_name` (X-Request-Id by
 * default). With X-Request-Id the id is the request's own (logs show it,
 * the upstream gets it); a client's valid id is kept when use_existing is
 * set, as weir does without this plugin.
 *
 *     [plugins.rid]
 *     category = "request_id"
 *     algorithm = "uuidv7"
 *     use_existing = true
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "app/plugin/plugins.h"

typedef enum algo { A_UUID, A_UUIDV7, A_NANOID } algo;

typedef struct rid_conf {
    algo algo;
    uint32_t size;
    char *header; /* NULL: X-Request-Id */
    bool use_existing;
} rid_conf;

static void rid_free(void *conf)
{
    rid_conf *r = conf;
    free(r->header);
    free(r);
}

static bool rid_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    rid_conf *r = calloc(1, sizeof(*r));
    if (!r)
        return false;
    *conf = r;
    r->size = 21;
    bool present;
    char *a = weir__cfg_dup_string(ld, t, "algorithm", section, &present);
    if (a) {
        if (strcmp(a, "uuid") == 0 || strcmp(a, "uuidv4") == 0) {
            r->algo = A_UUID;
        } else if (strcmp(a, "uuidv7") == 0) {
            r->algo = A_UUIDV7;
        } else if (strcmp(a, "nanoid") == 0) {
            r->algo = A_NANOID;
        } else {
            weir_toml_entry e;
            weir__cfg_entry_of(t, "algorithm", &e);
            weir__cfg_err_at(ld, e.line,
                             "'algorithm' in [%s] must be uuid, uuidv7 or nanoid, not '%s'",
                             section, a);
        }
        free(a);
    }
    int64_t v;
    if (weir__cfg_get_int(ld, t, "size", section, 8, 64, &v))
        r->size = (uint32_t)v;
    r->header = weir__cfg_dup_string(ld, t, "header_name", section, &present);
    if (r->header &&
        (!weir__cfg_valid_token(r->header) || weir__cfg_forbidden_field(r->header, false))) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "header_name", &e);
        weir__cfg_err_at(ld, e.line,
                         "'header_name' in [%s] must be a header name weir does not write itself",
                         section);
    }
    weir__cfg_get_bool(ld, t, "use_existing", section, &r->use_existing);
    return true;
}

/* xorshift128+ per thread, seeded by the kernel: ids that do not repeat
 * and cost no system call each. */
static uint64_t next64(void)
{
    static __thread uint64_t st[2];
    if (!st[0] && !st[1]) {
        if (getrandom(st, sizeof(st), 0) != sizeof(st)) {
            st[0] = (uint64_t)(uintptr_t)&st ^ 0x9e3779b97f4a7c15ull;
            st[1] = (uint64_t)time(NULL) | 1;
        }
    }
    uint64_t x = st[0], y = st[1];
    st[0] = y;
    x ^= x << 23;
    st[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return st[1] + y;
}

static size_t make_uuid(char *out, bool v7)
{
    unsigned char b[16];
    uint64_t r0 = next64(), r1 = next64();
    memcpy(b, &r0, 8);
    memcpy(b + 8, &r1, 8);
    if (v7) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        for (int i = 0; i < 6; i++)
            b[i] = (unsigned char)(ms >> (40 - 8 * i));
        b[6] = (unsigned char)(0x70 | (b[6] & 0x0f));
    } else {
        b[6] = (unsigned char)(0x40 | (b[6] & 0x0f));
    }
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[n++] = '-';
        out[n++] = hex[b[i] >> 4];
        out[n++] = hex[b[i] & 15];
    }
    return n;
}

static size_t make_nanoid(char *out, uint32_t size)
{
    static const char abc[] = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict";
    uint64_t r = 0;
    for (uint32_t i = 0; i < size; i++) {
        if (i % 10 == 0)
            r = next64();
        out[i] = abc[r & 63];
        r >>= 6;
    }
    return size;
}

static weir_phase_result rid_request(weir_plugin_call *c)
{
    const rid_conf *r = c->plugin->conf;
    weir_session *s = c->s;
    const char *name = r->header ? r->header : "X-Request-Id";
    bool own = strcasecmp(name, "x-request-id") == 0;
    weir_headers *h = weir_session_req_headers(s);
    weir_str given = weir_headers_get(h, name);
    if (r->use_existing && given.ptr && given.len > 0 &&
        (!own || weir_session_set_request_id(s, given.ptr, given.len) == WEIR_OK))
        return WEIR_PHASE_CONTINUE;
    char id[72];
    size_t n = r->algo == A_NANOID ? make_nanoid(id, r->size) : make_uuid(id, r->algo == A_UUIDV7);
    id[n] = '\0';
    /* X-Request-Id: the request's id from now on (logs, the upstream). */
    if (own && weir_session_set_request_id(s, id, n) == WEIR_OK) {
        weir_headers_remove(h, "x-request-id");
        return WEIR_PHASE_CONTINUE;
    }
    weir_headers_set(h, name, id);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_request_id = {
    .category = "request_id",
    .keys = (const weir_cfg_key[]){{"algorithm", WEIR_CT_STRING, NULL},
                                   {"size", WEIR_CT_INTEGER, NULL},
                                   {"header_name", WEIR_CT_STRING, NULL},
                                   {"use_existing", WEIR_CT_BOOLEAN, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_EARLY_REQUEST,
    .parse = rid_parse,
    .free = rid_free,
    .request = rid_request,
};
