/*
 * entry.c - stored heads (see entry.h).
 *
 * Encoding, little-endian:
 *   "WCE" version(1) | status u16 | request_time i64 | response_time i64 |
 *   n u32 | n x (name_len u32, value_len u32, name, value) | crc32 u32
 */
#include "cache/entry.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define VERSION 1
#define HEADER_LEN (4 + 2 + 8 + 8 + 4)
#define MAX_FIELDS 1000
#define MAX_LEN (1024 * 1024)

static bool named(weir_str n, const char *name)
{
    size_t len = strlen(name);
    return n.len == len && strncasecmp(n.ptr, name, len) == 0;
}

/* A field listed in one of h's Connection fields. */
static bool in_connection(const weir_headers *h, weir_str name)
{
    for (size_t i = 0; h && i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (!named(f.name, "connection"))
            continue;
        const char *p = f.value.ptr, *end = p + f.value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - s) == name.len && strncasecmp(s, name.ptr, name.len) == 0)
                return true;
            while (p < end && *p != ',')
                p++;
        }
    }
    return false;
}

/* Not kept with a stored head (RFC 9111 3.1; Age is recomputed). */
static bool not_stored(const weir_headers *h, weir_str name)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "transfer-encoding",
                                      "upgrade",
                                      "trailer",
                                      "age",
                                      NULL};
    for (size_t i = 0; hop[i]; i++) {
        if (named(name, hop[i]))
            return true;
    }
    return in_connection(h, name);
}

/* What a 304 cannot change under the stored body (3.2). */
static bool kept_on_update(weir_str name)
{
    return named(name, "content-length") || named(name, "content-encoding") ||
           named(name, "content-type") || named(name, "content-range");
}

static void put32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static void put64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Points e->fields into e->buf (an encoding already checked). */
static int index_fields(weir_centry *e)
{
    const unsigned char *p = (const unsigned char *)e->buf;
    size_t n = get32(p + 22);
    weir_header *v = malloc((n ? n : 1) * sizeof(*v));
    if (!v)
        return WEIR_ERR_NOMEM;
    size_t off = HEADER_LEN;
    for (size_t i = 0; i < n; i++) {
        uint32_t nl = get32(p + off), vl = get32(p + off + 4);
        off += 8;
        v[i] = (weir_header){{e->buf + off, nl}, {e->buf + off + nl, vl}};
        off += (size_t)nl + vl;
    }
    e->fields = v;
    e->n_fields = n;
    return WEIR_OK;
}

/* Encodes status, times and the fields f[0..n) into e (which it
 * replaces only on success). */
static int encode(weir_centry *e, int status, time_t rq, time_t rs, const weir_header *f, size_t n)
{
    size_t len = HEADER_LEN + 4;
    for (size_t i = 0; i < n; i++)
        len += 8 + f[i].name.len + f[i].value.len;
    if (n > MAX_FIELDS || len > MAX_LEN)
        return WEIR_ERR_NOMEM;
    char *buf = malloc(len);
    if (!buf)
        return WEIR_ERR_NOMEM;
    memcpy(buf, "WCE", 3);
    buf[3] = VERSION;
    buf[4] = (char)(status & 0xff);
    buf[5] = (char)(status >> 8);
    put64(buf + 6, (uint64_t)(int64_t)rq);
    put64(buf + 14, (uint64_t)(int64_t)rs);
    put32(buf + 22, (uint32_t)n);
    size_t off = HEADER_LEN;
    for (size_t i = 0; i < n; i++) {
        put32(buf + off, (uint32_t)f[i].name.len);
        put32(buf + off + 4, (uint32_t)f[i].value.len);
        off += 8;
        memcpy(buf + off, f[i].name.ptr, f[i].name.len);
        off += f[i].name.len;
        memcpy(buf + off, f[i].value.ptr, f[i].value.len);
        off += f[i].value.len;
    }
    put32(buf + off, (uint32_t)crc32(0L, (const Bytef *)buf, (uInt)off));
    weir_centry ne = {status, rq, rs, NULL, 0, buf, len};
    if (index_fields(&ne) != WEIR_OK) {
        free(buf);
        return WEIR_ERR_NOMEM;
    }
    weir__centry_free(e);
    *e = ne;
    return WEIR_OK;
}

int weir__centry_make(weir_centry *e, int status, const weir_headers *h, time_t request_time,
                      time_t response_time)
{
    memset(e, 0, sizeof(*e));
    size_t n = h ? weir_headers_count(h) : 0, k = 0;
    weir_header *f = malloc((n ? n : 1) * sizeof(*f));
    if (!f)
        return WEIR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        weir_header x = weir_headers_at(h, i);
        if (!not_stored(h, x.name))
            f[k++] = x;
    }
    int rc = encode(e, status, request_time, response_time, f, k);
    free(f);
    return rc;
}

int weir__centry_update(weir_centry *e, const weir_headers *h304, time_t request_time,
                        time_t response_time)
{
    size_t n304 = weir_headers_count(h304);
    weir_header *f = malloc((e->n_fields + n304 + 1) * sizeof(*f));
    if (!f)
        return WEIR_ERR_NOMEM;
    size_t k = 0;
    /* A field the 304 brings (and may update) replaces every stored one
     * of its name; the others stay. */
    for (size_t i = 0; i < e->n_fields; i++) {
        weir_str name = e->fields[i].name;
        bool replaced = false;
        for (size_t j = 0; j < n304 && !replaced; j++) {
            weir_header x = weir_headers_at(h304, j);
            replaced = x.name.len == name.len && strncasecmp(x.name.ptr, name.ptr, name.len) == 0 &&
                       !not_stored(h304, x.name) && !kept_on_update(x.name);
        }
        if (!replaced)
            f[k++] = e->fields[i];
    }
    for (size_t j = 0; j < n304; j++) {
        weir_header x = weir_headers_at(h304, j);
        if (!not_stored(h304, x.name) && !kept_on_update(x.name))
            f[k++] = x;
    }
    /* encode copies from e's buffer before it frees it */
    int rc = encode(e, e->status, request_time, response_time, f, k);
    free(f);
    return rc;
}

int weir__centry_decode(weir_centry *e, const void *data, size_t len)
{
    memset(e, 0, sizeof(*e));
    const unsigned char *p = data;
    if (len < HEADER_LEN + 4 || len > MAX_LEN || memcmp(p, "WCE", 3) != 0 || p[3] != VERSION)
        return WEIR_ERR_INVAL;
    size_t n = get32(p + 22), off = HEADER_LEN;
    if (n > MAX_FIELDS)
        return WEIR_ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (len - 4 - off < 8)
            return WEIR_ERR_INVAL;
        uint64_t fl = (uint64_t)get32(p + off) + get32(p + off + 4);
        off += 8;
        if (fl > len - 4 - off)
            return WEIR_ERR_INVAL;
        off += (size_t)fl;
    }
    if (off != len - 4 || get32(p + off) != (uint32_t)crc32(0L, p, (uInt)off))
        return WEIR_ERR_INVAL;
    int status = p[4] | p[5] << 8;
    if (status < 100 || status > 999)
        return WEIR_ERR_INVAL;
    char *buf = malloc(len);
    if (!buf)
        return WEIR_ERR_NOMEM;
    memcpy(buf, data, len);
    *e = (weir_centry){
        status, (time_t)(int64_t)get64(p + 6), (time_t)(int64_t)get64(p + 14), NULL, 0, buf, len};
    if (index_fields(e) != WEIR_OK) {
        free(buf);
        memset(e, 0, sizeof(*e));
        return WEIR_ERR_NOMEM;
    }
    return WEIR_OK;
}

const weir_str *weir__centry_field(const weir_centry *e, const char *name)
{
    for (size_t i = 0; i < e->n_fields; i++) {
        if (named(e->fields[i].name, name))
            return &e->fields[i].value;
    }
    return NULL;
}

void weir__centry_free(weir_centry *e)
{
    free(e->fields);
    free(e->buf);
    memset(e, 0, sizeof(*e));
}
