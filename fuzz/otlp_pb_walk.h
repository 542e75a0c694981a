/*
 * otlp_pb_walk.h - a strict reader of the OTLP protobuf weir writes
 * (src/app/otel/protobuf.c), for the unit test and the fuzz target: every
 * length inside its parent, wire types as the schema has them, ids of 16
 * and 8 bytes, strings UTF-8 (read here by its own rules, not the
 * encoder's), varints at most ten bytes and minimal. Collects the spans'
 * count and one attribute's value of the first span.
 */
#ifndef WEIR_FUZZ_OTLP_PB_WALK_H
#define WEIR_FUZZ_OTLP_PB_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct pb_walk {
    const char *want_key; /* an attribute of the first span to report */
    char value[1024];     /* its string value */
    bool found;
    size_t spans;
    const char *err; /* the first thing wrong, or NULL */
} pb_walk;

typedef struct pb_field {
    int num, wt;
    uint64_t v;          /* a varint's or a fixed one's value */
    const uint8_t *data; /* a LEN field's bytes */
    size_t len;
} pb_field;

static bool pbw_fail(pb_walk *w, const char *why)
{
    if (!w->err)
        w->err = why;
    return false;
}

static bool pbw_varint(pb_walk *w, const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int i = 0; i < 10; i++) {
        if (*p >= end)
            return pbw_fail(w, "truncated varint");
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                return pbw_fail(w, "varint not minimal");
            return true;
        }
    }
    return pbw_fail(w, "varint over ten bytes");
}

/* The next field at *p, or false at the end (w->err says whether that is
 * an error). */
static bool pbw_next(pb_walk *w, const uint8_t **p, const uint8_t *end, pb_field *f)
{
    if (*p >= end)
        return false;
    uint64_t tag;
    if (!pbw_varint(w, p, end, &tag))
        return false;
    f->num = (int)(tag >> 3);
    f->wt = (int)(tag & 7);
    f->data = NULL;
    f->len = 0;
    if (f->num == 0)
        return pbw_fail(w, "field number 0");
    switch (f->wt) {
    case 0:
        return pbw_varint(w, p, end, &f->v);
    case 1:
    case 5: {
        size_t n = f->wt == 1 ? 8 : 4;
        if ((size_t)(end - *p) < n)
            return pbw_fail(w, "truncated fixed field");
        f->v = 0;
        for (size_t i = 0; i < n; i++)
            f->v |= (uint64_t)(*p)[i] << (8 * i);
        *p += n;
        return true;
    }
    case 2:
        if (!pbw_varint(w, p, end, &f->v))
            return false;
        if (f->v > (uint64_t)(end - *p))
            return pbw_fail(w, "length past its parent");
        f->data = *p;
        f->len = (size_t)f->v;
        *p += f->len;
        return true;
    default:
        return pbw_fail(w, "unknown wire type");
    }
}

static bool pbw_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + k > n)
            return false;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k;
    }
    return true;
}

static bool pbw_string(pb_walk *w, const pb_field *f)
{
    if (f->wt != 2)
        return pbw_fail(w, "a string is not LEN");
    if (!pbw_utf8(f->data, f->len))
        return pbw_fail(w, "a string is not UTF-8");
    return true;
}

/* A KeyValue; its string value in out when the key is want. */
static bool pbw_kv(pb_walk *w, const pb_field *kv, const char *want, char *out, size_t cap,
                   bool *found)
{
    if (kv->wt != 2)
        return pbw_fail(w, "a KeyValue is not LEN");
    const uint8_t *p = kv->data, *end = kv->data + kv->len;
    pb_field f;
    bool match = false, has_value = false;
    while (pbw_next(w, &p, end, &f)) {
        if (f.num == 1) {
            if (!pbw_string(w, &f))
                return false;
            match = want && f.len == strlen(want) && memcmp(f.data, want, f.len) == 0;
        } else if (f.num == 2) {
            if (f.wt != 2)
                return pbw_fail(w, "an AnyValue is not LEN");
            has_value = true;
            const uint8_t *q = f.data, *qe = f.data + f.len;
            pb_field v;
            int n = 0;
            while (pbw_next(w, &q, qe, &v)) {
                n++;
                if (v.num == 1) {
                    if (!pbw_string(w, &v))
                        return false;
                    if (match && out) {
                        size_t k = v.len < cap - 1 ? v.len : cap - 1;
                        memcpy(out, v.data, k);
                        out[k] = '\0';
                        *found = true;
                    }
                } else if ((v.num == 2 || v.num == 3) && v.wt != 0) {
                    return pbw_fail(w, "a bool or int value is not a varint");
                } else if (v.num > 3) {
                    return pbw_fail(w, "a value of a kind weir does not write");
                }
            }
            if (w->err)
                return false;
            if (n != 1)
                return pbw_fail(w, "an AnyValue without exactly one value");
        }
    }
    if (w->err)
        return false;
    return has_value ? true : pbw_fail(w, "a KeyValue without a value");
}

static bool pbw_span(pb_walk *w, const pb_field *sp)
{
    const uint8_t *p = sp->data, *end = sp->data + sp->len;
    pb_field f;
    bool first = w->spans == 0;
    bool has_trace = false, has_span = false;
    w->spans++;
    while (pbw_next(w, &p, end, &f)) {
        switch (f.num) {
        case 1:
            if (f.wt != 2 || f.len != 16)
                return pbw_fail(w, "trace_id is not 16 bytes");
            has_trace = true;
            break;
        case 2:
        case 4:
            if (f.wt != 2 || f.len != 8)
                return pbw_fail(w, "a span id is not 8 bytes");
            has_span = has_span || f.num == 2;
            break;
        case 5:
            if (!pbw_string(w, &f))
                return false;
            break;
        case 6:
            if (f.wt != 0 || f.v < 1 || f.v > 3)
                return pbw_fail(w, "kind is not INTERNAL, SERVER or CLIENT");
            break;
        case 7:
        case 8:
            if (f.wt != 1)
                return pbw_fail(w, "a time is not fixed64");
            break;
        case 9:
            if (!pbw_kv(w, &f, first ? w->want_key : NULL, w->value, sizeof(w->value), &w->found))
                return false;
            break;
        case 11: {
            const uint8_t *q = f.data, *qe = f.data + f.len;
            pb_field e;
            if (f.wt != 2)
                return pbw_fail(w, "an event is not LEN");
            while (pbw_next(w, &q, qe, &e)) {
                if ((e.num == 1 && e.wt != 1) || (e.num == 2 && !pbw_string(w, &e)) ||
                    (e.num == 3 && !pbw_kv(w, &e, NULL, NULL, 0, NULL)))
                    return pbw_fail(w, "a bad event");
            }
            break;
        }
        case 15: {
            const uint8_t *q = f.data, *qe = f.data + f.len;
            pb_field s;
            if (f.wt != 2)
                return pbw_fail(w, "status is not LEN");
            while (pbw_next(w, &q, qe, &s)) {
                if ((s.num == 2 && !pbw_string(w, &s)) || (s.num == 3 && s.wt != 0))
                    return pbw_fail(w, "a bad status");
            }
            break;
        }
        default:
            return pbw_fail(w, "a span field weir does not write");
        }
    }
    if (w->err)
        return false;
    return has_trace && has_span ? true : pbw_fail(w, "a span without its ids");
}

/* Walks an ExportTraceServiceRequest; true when it is well-formed. */
static bool pbw_request(pb_walk *w, const uint8_t *buf, size_t n)
{
    const uint8_t *p = buf, *end = buf + n;
    pb_field rs;
    while (pbw_next(w, &p, end, &rs)) {
        if (rs.num != 1 || rs.wt != 2)
            return pbw_fail(w, "not resource_spans");
        const uint8_t *q = rs.data, *qe = rs.data + rs.len;
        pb_field f;
        while (pbw_next(w, &q, qe, &f)) {
            if (f.wt != 2)
                return pbw_fail(w, "a ResourceSpans field is not LEN");
            const uint8_t *r = f.data, *re = f.data + f.len;
            pb_field g;
            while (pbw_next(w, &r, re, &g)) {
                bool ok = f.num == 1   ? g.num == 1 && pbw_kv(w, &g, NULL, NULL, 0, NULL)
                          : g.num == 2 ? g.wt == 2 && pbw_span(w, &g)
                          : g.num == 1 ? g.wt == 2
                                       : false;
                if (!ok)
                    return pbw_fail(w, "a bad resource or scope");
            }
            if (w->err)
                return false;
        }
        if (w->err)
            return false;
    }
    return !w->err;
}

#endif
