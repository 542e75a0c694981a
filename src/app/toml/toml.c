/*
 * toml.c - TOML 1.0.0 parser (see toml.h).
 *
 * A recursive-descent parser over the whole document at once: configuration
 * files are small and read in one go, so there is no need to resume on
 * partial input. The document is first checked to be valid UTF-8, then
 * parsed line by line: blank/comment lines, [table] and [[array]] headers,
 * and key/value pairs, each followed by the end of the line.
 *
 * Values, keys and decoded strings live in one arena per document, freed at
 * once by weir_toml_free(); a failed parse frees it before returning.
 *
 * Which table may be extended how is tracked with flags on each table:
 *   EXPLICIT  defined by a [header] (or an element of [[array]]): a second
 *             [header] of the same name is an error;
 *   IMPLICIT  created as a parent by a header such as [a.b.c] (a, a.b): may
 *             later be defined once by its own [header];
 *   DOTTED    created by a dotted key (a.b = 1): may be extended by further
 *             dotted keys and used as a parent of headers, never defined by a
 *             [header] of its own name;
 *   INLINE    an inline table { ... }: complete as written, immutable.
 * Arrays carry AOT when made by [[header]]; only those may be appended to.
 *
 * Numbers and date-times are classified and decoded in toml_scalar.c.
 */
#include "app/toml/toml.h"
#include "app/toml/toml_scalar.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    F_EXPLICIT = 1,
    F_IMPLICIT = 2,
    F_DOTTED = 4,
    F_INLINE = 8,
    F_AOT = 16,
};

/* A table entry as stored. */
typedef struct kv {
    const char *key; /* arena, NUL-terminated, key_len bytes */
    size_t key_len;
    int line, column; /* of the key */
    weir_toml_value *val;
} kv;

struct weir_toml_value {
    uint8_t type;  /* weir_toml_type */
    uint8_t flags; /* F_* */
    int line, column;
    union {
        struct {
            kv *items;
            size_t n, cap;
            size_t *index;    /* big tables: open addressing, entry i + 1 or 0 */
            size_t index_cap; /* a power of 2, at least twice n; 0: none */
        } tab;
        struct {
            weir_toml_value **items;
            size_t n, cap;
        } arr;
        struct {
            char *ptr;
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
        weir_toml_datetime dt;
    } u;
};

/* Arena chunk: data follows the header. */
typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} chunk;

#define CHUNK_SIZE (32 * 1024 - sizeof(chunk))

/* A document: the root table first so that a root pointer is a doc pointer. */
typedef struct doc {
    weir_toml_value root;
    chunk *chunks; /* newest first */
} doc;

typedef struct parser {
    const char *s;
    size_t len, pos;
    doc *d;
    weir_toml_value *cur; /* the table key/values go into */
    weir_toml_error *err;
    bool failed;
    int depth;
    /* string decoding scratch (malloc'd) */
    char *buf;
    size_t buf_len, buf_cap;
    /* position cache: line/column of loc_pos, only moves forward */
    size_t loc_pos;
    int loc_line, loc_col;
} parser;

/* ---- memory ---- */

static void *arena_alloc(parser *p, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    chunk *c = p->d->chunks;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > CHUNK_SIZE ? size : CHUNK_SIZE;
        c = malloc(sizeof(chunk) + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = p->d->chunks;
        p->d->chunks = c;
    }
    void *r = c->data + c->used;
    c->used += size;
    return r;
}

static void doc_free(doc *d)
{
    chunk *c = d->chunks;
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
    free(d);
}

/* ---- positions and errors ---- */

/*
 * Line and column of byte offset off. Positions are asked for in nearly
 * increasing order, so the last answer is kept and the scan goes on from
 * there (backwards too), which keeps the whole parse linear.
 */
static void locate(parser *p, size_t off, int *line, int *col)
{
    const unsigned char *s = (const unsigned char *)p->s;
    bool lost_col = false;
    if (off > p->len)
        off = p->len;
    while (p->loc_pos > off) {
        unsigned char c = s[--p->loc_pos];
        if (c == '\n') {
            p->loc_line--;
            lost_col = true;
        } else if ((c & 0xC0) != 0x80) {
            p->loc_col--;
        }
    }
    if (lost_col) {
        size_t i = off;
        p->loc_col = 1;
        while (i > 0 && s[i - 1] != '\n')
            if ((s[--i] & 0xC0) != 0x80)
                p->loc_col++;
    }
    for (; p->loc_pos < off; p->loc_pos++) {
        unsigned char c = s[p->loc_pos];
        if (c == '\n') {
            p->loc_line++;
            p->loc_col = 1;
        } else if ((c & 0xC0) != 0x80) {
            p->loc_col++;
        }
    }
    *line = p->loc_line;
    *col = p->loc_col;
}

static bool fail(parser *p, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records the first error, at byte offset off; returns false. */
static bool fail(parser *p, size_t off, const char *fmt, ...)
{
    if (p->failed)
        return false;
    p->failed = true;
    if (!p->err)
        return false;
    locate(p, off, &p->err->line, &p->err->column);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->message, sizeof(p->err->message), fmt, ap);
    va_end(ap);
    return false;
}

static bool fail_oom(parser *p)
{
    return fail(p, p->pos, "out of memory");
}

/* A printable, bounded rendering of a key for messages. */
static const char *key_repr(char out[48], const char *k, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o < 40; i++) {
        unsigned char c = (unsigned char)k[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (o == 40 && len > 40) {
        /* do not cut a UTF-8 sequence in half */
        while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
            o--;
        if (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0xC0)
            o--;
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static const char *value_kind(const weir_toml_value *v)
{
    if (v->type == WEIR_TOML_TABLE && (v->flags & F_INLINE))
        return "inline table";
    if (v->type == WEIR_TOML_ARRAY && (v->flags & F_AOT))
        return "array of tables";
    return weir_toml_type_name((weir_toml_type)v->type);
}

static const char *article(const char *noun)
{
    return strchr("aeiou", noun[0]) ? "an" : "a";
}

/* ---- lexing helpers ---- */

static int peek_at(const parser *p, size_t k)
{
    return p->pos + k < p->len ? (unsigned char)p->s[p->pos + k] : -1;
}

static int peek(const parser *p)
{
    return peek_at(p, 0);
}

static bool is_control(int c)
{
    return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
        p->pos++;
}

/* At '#': skips the comment up to (not including) the end of the line. */
static bool skip_comment(parser *p)
{
    p->pos++;
    for (; p->pos < p->len; p->pos++) {
        int c = (unsigned char)p->s[p->pos];
        if (c == '\n' || c == '\r')
            return true;
        if (is_control(c))
            return fail(p, p->pos, "control character U+%04X in comment", c);
    }
    return true;
}

/* Consumes LF or CRLF. Returns 1 if one was consumed, 0 if none is here, -1
 * on a bare CR. */
static int eat_newline(parser *p)
{
    int c = peek(p);
    if (c == '\n') {
        p->pos++;
        return 1;
    }
    if (c == '\r') {
        if (peek_at(p, 1) == '\n') {
            p->pos += 2;
            return 1;
        }
        fail(p, p->pos, "carriage return not followed by a line feed");
        return -1;
    }
    return 0;
}

/* Skips whitespace, comments and newlines (inside arrays). */
static bool skip_ws_nl(parser *p)
{
    for (;;) {
        skip_ws(p);
        int c = peek(p);
        if (c == '#') {
            if (!skip_comment(p))
                return false;
            continue;
        }
        int r = eat_newline(p);
        if (r < 0)
            return false;
        if (r == 0)
            return true;
    }
}

/* Whitespace and newlines, no comments (after a line-ending backslash). */
static bool skip_ws_nl_only(parser *p)
{
    for (;;) {
        skip_ws(p);
        int r = eat_newline(p);
        if (r < 0)
            return false;
        if (r == 0)
            return true;
    }
}

/* Whitespace, an optional comment, then a newline or the end of input. */
static bool end_of_line(parser *p, const char *after)
{
    skip_ws(p);
    if (peek(p) == '#' && !skip_comment(p))
        return false;
    if (p->pos >= p->len)
        return true;
    int r = eat_newline(p);
    if (r < 0)
        return false;
    if (r == 0)
        return fail(p, p->pos, "expected a newline after %s", after);
    return true;
}

/* ---- values and tables ---- */

static weir_toml_value *new_value(parser *p, weir_toml_type type, size_t off)
{
    weir_toml_value *v = arena_alloc(p, sizeof(*v));
    if (!v) {
        fail_oom(p);
        return NULL;
    }
    memset(v, 0, sizeof(*v));
    v->type = (uint8_t)type;
    locate(p, off, &v->line, &v->column);
    return v;
}

static size_t key_hash(const char *k, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)k[i]) * 0x100000001b3ull;
    return (size_t)h;
}

static kv *table_find(const weir_toml_value *t, const char *k, size_t len)
{
    if (t->u.tab.index_cap) {
        size_t mask = t->u.tab.index_cap - 1;
        for (size_t i = key_hash(k, len) & mask; t->u.tab.index[i]; i = (i + 1) & mask) {
            kv *e = &t->u.tab.items[t->u.tab.index[i] - 1];
            if (e->key_len == len && memcmp(e->key, k, len) == 0)
                return e;
        }
        return NULL;
    }
    for (size_t i = 0; i < t->u.tab.n; i++) {
        kv *e = &t->u.tab.items[i];
        if (e->key_len == len && memcmp(e->key, k, len) == 0)
            return e;
    }
    return NULL;
}

/* Past a few keys, tables get a hash index so that big documents do not
 * parse in quadratic time; small ones (nearly all) stay a plain list. */
#define INDEX_FROM 16

static void index_put(weir_toml_value *t, size_t entry)
{
    const kv *e = &t->u.tab.items[entry];
    size_t mask = t->u.tab.index_cap - 1, i = key_hash(e->key, e->key_len) & mask;
    while (t->u.tab.index[i])
        i = (i + 1) & mask;
    t->u.tab.index[i] = entry + 1;
}

static bool index_update(parser *p, weir_toml_value *t)
{
    size_t n = t->u.tab.n;
    if (n < INDEX_FROM)
        return true;
    if (t->u.tab.index_cap >= 2 * n) {
        index_put(t, n - 1);
        return true;
    }
    size_t cap = 64;
    while (cap < 4 * n)
        cap *= 2;
    size_t *index = arena_alloc(p, cap * sizeof(*index));
    if (!index)
        return fail_oom(p);
    memset(index, 0, cap * sizeof(*index));
    t->u.tab.index = index;
    t->u.tab.index_cap = cap;
    for (size_t i = 0; i < n; i++)
        index_put(t, i);
    return true;
}

/* Appends key = v to table t; the key was written at line:col. */
static kv *table_add(parser *p, weir_toml_value *t, const char *k, size_t len, int line, int col,
                     weir_toml_value *v)
{
    if (t->u.tab.n == t->u.tab.cap) {
        size_t cap = t->u.tab.cap ? t->u.tab.cap * 2 : 4;
        kv *items = arena_alloc(p, cap * sizeof(kv));
        if (!items) {
            fail_oom(p);
            return NULL;
        }
        if (t->u.tab.n)
            memcpy(items, t->u.tab.items, t->u.tab.n * sizeof(kv));
        t->u.tab.items = items;
        t->u.tab.cap = cap;
    }
    kv *e = &t->u.tab.items[t->u.tab.n++];
    e->key = k;
    e->key_len = len;
    e->val = v;
    e->line = line;
    e->column = col;
    return index_update(p, t) ? e : NULL;
}

static bool array_push(parser *p, weir_toml_value *a, weir_toml_value *v)
{
    if (a->u.arr.n == a->u.arr.cap) {
        size_t cap = a->u.arr.cap ? a->u.arr.cap * 2 : 4;
        weir_toml_value **items = arena_alloc(p, cap * sizeof(*items));
        if (!items)
            return fail_oom(p);
        if (a->u.arr.n)
            memcpy(items, a->u.arr.items, a->u.arr.n * sizeof(*items));
        a->u.arr.items = items;
        a->u.arr.cap = cap;
    }
    a->u.arr.items[a->u.arr.n++] = v;
    return true;
}

/* Creates table `k` (written at key_off) in t with the given flags; the
 * table itself is said to start at off. */
static weir_toml_value *add_table(parser *p, weir_toml_value *t, const char *k, size_t len,
                                  size_t key_off, size_t off, int flags)
{
    int line, col;
    weir_toml_value *v = new_value(p, WEIR_TOML_TABLE, off);
    locate(p, key_off, &line, &col);
    if (!v || !table_add(p, t, k, len, line, col, v))
        return NULL;
    v->flags = (uint8_t)flags;
    return v;
}

/* ---- strings ---- */

static bool buf_put(parser *p, const char *s, size_t n)
{
    if (p->buf_cap - p->buf_len < n) {
        size_t cap = p->buf_cap ? p->buf_cap : 256;
        while (cap - p->buf_len < n)
            cap *= 2;
        char *b = realloc(p->buf, cap);
        if (!b)
            return fail_oom(p);
        p->buf = b;
        p->buf_cap = cap;
    }
    memcpy(p->buf + p->buf_len, s, n);
    p->buf_len += n;
    return true;
}

static bool buf_put_utf8(parser *p, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_put(p, u, n);
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* At a backslash in a basic string: decodes one escape into the buffer. */
static bool parse_escape(parser *p)
{
    size_t off = p->pos;
    int c = peek_at(p, 1);
    char ch;
    switch (c) {
    case 'b':
        ch = '\b';
        break;
    case 't':
        ch = '\t';
        break;
    case 'n':
        ch = '\n';
        break;
    case 'f':
        ch = '\f';
        break;
    case 'r':
        ch = '\r';
        break;
    case '"':
        ch = '"';
        break;
    case '\\':
        ch = '\\';
        break;
    case 'u':
    case 'U': {
        int n = c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int i = 0; i < n; i++) {
            int h = hex_value(peek_at(p, 2 + (size_t)i));
            if (h < 0)
                return fail(p, off, "\\%c escape needs %d hex digits", c, n);
            cp = cp << 4 | (uint32_t)h;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return fail(p, off, "escape \\%c%0*X is not a Unicode scalar value", c, n,
                        (unsigned)cp);
        p->pos += 2 + (size_t)n;
        return buf_put_utf8(p, cp);
    }
    default:
        if (c < 0x20 || c >= 0x7f)
            return fail(p, off, "invalid escape sequence");
        return fail(p, off, "invalid escape sequence '\\%c'", c);
    }
    p->pos += 2;
    return buf_put(p, &ch, 1);
}

/*
 * Parses a string of any of the four forms at p->pos into p->buf. With
 * key set, only the single-line forms are allowed.
 */
static bool parse_string_raw(parser *p, bool key)
{
    size_t start = p->pos;
    char q = p->s[p->pos];
    bool ml = peek_at(p, 1) == q && peek_at(p, 2) == q;
    p->buf_len = 0;
    if (ml && key)
        return fail(p, start, "a key cannot be a multi-line string");
    if (ml) {
        p->pos += 3;
        /* a newline right after the opening delimiter is trimmed */
        if (peek(p) == '\n')
            p->pos++;
        else if (peek(p) == '\r' && peek_at(p, 1) == '\n')
            p->pos += 2;
    } else if (peek_at(p, 1) == q) {
        p->pos += 2; /* empty */
        return true;
    } else {
        p->pos++;
    }
    for (;;) {
        int c = peek(p);
        if (c < 0 || (!ml && (c == '\n' || c == '\r')))
            return fail(p, start, "unterminated string");
        if (c == q) {
            if (!ml) {
                p->pos++;
                return true;
            }
            size_t n = 0;
            while (peek_at(p, n) == q)
                n++;
            if (n > 5)
                return fail(p, p->pos, "too many quotes in a multi-line string");
            char qq[2] = {q, q};
            if (!buf_put(p, qq, n < 3 ? n : n - 3))
                return false;
            p->pos += n;
            if (n >= 3)
                return true;
            continue;
        }
        if (c == '\\' && q == '"') {
            if (ml) {
                /* a line-ending backslash eats all whitespace up to the next
                 * non-whitespace character */
                size_t k = 1;
                while (peek_at(p, k) == ' ' || peek_at(p, k) == '\t')
                    k++;
                int e = peek_at(p, k);
                if (e == '\n' || e == '\r') {
                    p->pos += k;
                    if (!skip_ws_nl_only(p))
                        return false;
                    continue;
                }
            }
            if (!parse_escape(p))
                return false;
            continue;
        }
        if (c == '\r') {
            if (peek_at(p, 1) != '\n')
                return fail(p, p->pos, "carriage return not followed by a line feed");
            p->pos++; /* CRLF is stored as LF */
            continue;
        }
        if (is_control(c) && c != '\n')
            return fail(p, p->pos, "control character U+%04X in string", c);
        char ch = (char)c;
        if (!buf_put(p, &ch, 1))
            return false;
        p->pos++;
    }
}

/* Copies the decoded string buffer into the arena, NUL-terminated. */
static char *buf_to_arena(parser *p)
{
    char *s = arena_alloc(p, p->buf_len + 1);
    if (!s) {
        fail_oom(p);
        return NULL;
    }
    if (p->buf_len)
        memcpy(s, p->buf, p->buf_len);
    s[p->buf_len] = '\0';
    return s;
}

/* ---- keys ---- */

static bool is_bare_key_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Parses one simple key (bare or quoted) into the arena. */
static bool parse_simple_key(parser *p, const char **key, size_t *len)
{
    int c = peek(p);
    if (c == '"' || c == '\'') {
        if (!parse_string_raw(p, true))
            return false;
    } else {
        size_t start = p->pos;
        while (p->pos < p->len && is_bare_key_char((unsigned char)p->s[p->pos]))
            p->pos++;
        if (p->pos == start) {
            if (c < 0)
                return fail(p, p->pos, "expected a key, found the end of the input");
            if (c == '\n' || c == '\r')
                return fail(p, p->pos, "expected a key, found the end of the line");
            return fail(p, p->pos, "invalid character in a key");
        }
        p->buf_len = 0;
        if (!buf_put(p, p->s + start, p->pos - start))
            return false;
    }
    *len = p->buf_len;
    *key = buf_to_arena(p);
    return *key != NULL;
}

/* Goes into (or creates) table k of t for a dotted key a.k.b = v. */
static weir_toml_value *descend_dotted(parser *p, weir_toml_value *t, const char *k, size_t len,
                                       size_t off)
{
    char kr[48];
    kv *e = table_find(t, k, len);
    if (!e)
        return add_table(p, t, k, len, off, off, F_DOTTED);
    weir_toml_value *v = e->val;
    if (v->type == WEIR_TOML_TABLE && (v->flags & F_DOTTED))
        return v;
    if (v->type == WEIR_TOML_TABLE)
        fail(p, off, "cannot add keys to %s '%s' defined at line %d with a dotted key",
             value_kind(v), key_repr(kr, k, len), e->line);
    else
        fail(p, off, "key '%s' is already defined at line %d as %s %s, not a table",
             key_repr(kr, k, len), e->line, article(value_kind(v)), value_kind(v));
    return NULL;
}

static weir_toml_value *parse_value(parser *p);

/* key = value into table t (dotted keys make sub-tables). */
static bool parse_keyval(parser *p, weir_toml_value *t)
{
    const char *k = NULL;
    size_t len = 0, off = 0;
    for (;;) {
        off = p->pos;
        if (!parse_simple_key(p, &k, &len))
            return false;
        skip_ws(p);
        if (peek(p) != '.')
            break;
        p->pos++;
        skip_ws(p);
        t = descend_dotted(p, t, k, len, off);
        if (!t)
            return false;
    }
    if (peek(p) != '=')
        return fail(p, p->pos, "expected '=' after a key");
    p->pos++;
    skip_ws(p);
    kv *e = table_find(t, k, len);
    if (e) {
        char kr[48];
        return fail(p, off, "duplicate key '%s' (first defined at line %d)", key_repr(kr, k, len),
                    e->line);
    }
    /* locate the key first: the position cache only moves forward cheaply */
    int line, col;
    locate(p, off, &line, &col);
    weir_toml_value *v = parse_value(p);
    if (!v)
        return false;
    return table_add(p, t, k, len, line, col, v) != NULL;
}

/* Goes into (or creates) table k of t for a header [a.k.b]. */
static weir_toml_value *descend_header(parser *p, weir_toml_value *t, const char *k, size_t len,
                                       size_t off)
{
    char kr[48];
    kv *e = table_find(t, k, len);
    if (!e)
        return add_table(p, t, k, len, off, off, F_IMPLICIT);
    weir_toml_value *v = e->val;
    if (v->type == WEIR_TOML_TABLE && !(v->flags & F_INLINE))
        return v;
    if (v->type == WEIR_TOML_ARRAY && (v->flags & F_AOT))
        return v->u.arr.items[v->u.arr.n - 1];
    fail(p, off, "key '%s' is already defined at line %d as %s %s", key_repr(kr, k, len), e->line,
         article(value_kind(v)), value_kind(v));
    return NULL;
}

/* [a.b.c] or [[a.b.c]]: makes the named table the current one. */
static bool parse_header(parser *p)
{
    size_t hoff = p->pos;
    bool aot = peek_at(p, 1) == '[';
    char kr[48];
    const char *k = NULL;
    size_t len = 0, off = 0;
    weir_toml_value *t = &p->d->root;

    p->pos += aot ? 2 : 1;
    skip_ws(p);
    for (;;) {
        off = p->pos;
        if (!parse_simple_key(p, &k, &len))
            return false;
        skip_ws(p);
        if (peek(p) != '.')
            break;
        p->pos++;
        skip_ws(p);
        t = descend_header(p, t, k, len, off);
        if (!t)
            return false;
    }
    if (peek(p) != ']' || (aot && peek_at(p, 1) != ']'))
        return fail(p, p->pos,
                    aot ? "expected ']]' to close an array of tables header"
                        : "expected ']' to close a table header");
    p->pos += aot ? 2 : 1;

    kv *e = table_find(t, k, len);
    weir_toml_value *v = e ? e->val : NULL;
    if (aot) {
        if (!v) {
            v = new_value(p, WEIR_TOML_ARRAY, hoff);
            int line, col;
            locate(p, off, &line, &col);
            if (!v || !table_add(p, t, k, len, line, col, v))
                return false;
            v->flags = F_AOT;
        } else if (v->type != WEIR_TOML_ARRAY || !(v->flags & F_AOT)) {
            return fail(p, off, "key '%s' is already defined at line %d as %s %s",
                        key_repr(kr, k, len), e->line, article(value_kind(v)), value_kind(v));
        }
        weir_toml_value *elem = new_value(p, WEIR_TOML_TABLE, hoff);
        if (!elem || !array_push(p, v, elem))
            return false;
        elem->flags = F_EXPLICIT;
        p->cur = elem;
        return true;
    }
    if (!v) {
        v = add_table(p, t, k, len, off, hoff, F_EXPLICIT);
        if (!v)
            return false;
    } else if (v->type == WEIR_TOML_TABLE && v->flags == F_IMPLICIT) {
        /* defined now: point at the header rather than the first use */
        v->flags = F_EXPLICIT;
        locate(p, hoff, &v->line, &v->column);
        locate(p, off, &e->line, &e->column);
    } else if (v->type == WEIR_TOML_TABLE && !(v->flags & F_INLINE)) {
        return fail(p, off, "table '%s' is already defined at line %d", key_repr(kr, k, len),
                    v->line);
    } else {
        return fail(p, off, "key '%s' is already defined at line %d as %s %s", key_repr(kr, k, len),
                    e->line, article(value_kind(v)), value_kind(v));
    }
    p->cur = v;
    return true;
}

static bool enter(parser *p, size_t off)
{
    if (++p->depth > WEIR_TOML_MAX_DEPTH)
        return fail(p, off, "arrays and inline tables nested more than %d deep",
                    WEIR_TOML_MAX_DEPTH);
    return true;
}

static weir_toml_value *parse_array(parser *p)
{
    size_t off = p->pos;
    if (!enter(p, off))
        return NULL;
    weir_toml_value *a = new_value(p, WEIR_TOML_ARRAY, off);
    if (!a)
        return NULL;
    p->pos++;
    for (;;) {
        if (!skip_ws_nl(p))
            return NULL;
        if (peek(p) == ']')
            break;
        weir_toml_value *v = parse_value(p);
        if (!v || !array_push(p, a, v) || !skip_ws_nl(p))
            return NULL;
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == ']')
            break;
        if (peek(p) < 0)
            fail(p, off, "unterminated array");
        else
            fail(p, p->pos, "expected ',' or ']' in an array");
        return NULL;
    }
    p->pos++;
    p->depth--;
    return a;
}

static weir_toml_value *parse_inline_table(parser *p)
{
    size_t off = p->pos;
    if (!enter(p, off))
        return NULL;
    weir_toml_value *t = new_value(p, WEIR_TOML_TABLE, off);
    if (!t)
        return NULL;
    t->flags = F_INLINE;
    p->pos++;
    skip_ws(p);
    if (peek(p) != '}') {
        for (;;) {
            if (!parse_keyval(p, t))
                return NULL;
            skip_ws(p);
            if (peek(p) == '}')
                break;
            if (peek(p) != ',') {
                if (peek(p) == '\n' || peek(p) == '\r')
                    fail(p, p->pos, "newline in an inline table");
                else if (peek(p) < 0)
                    fail(p, off, "unterminated inline table");
                else
                    fail(p, p->pos, "expected ',' or '}' in an inline table");
                return NULL;
            }
            p->pos++;
            skip_ws(p);
            if (peek(p) == '}') {
                fail(p, p->pos, "trailing comma in an inline table");
                return NULL;
            }
        }
    }
    p->pos++;
    p->depth--;
    return t;
}

static bool is_token_char(int c)
{
    return is_bare_key_char(c) || c == '+' || c == '.' || c == ':';
}

/* A number, inf/nan or a date/time: the token up to a delimiter. */
static weir_toml_value *parse_scalar(parser *p)
{
    size_t start = p->pos, end = start;
    while (end < p->len && is_token_char((unsigned char)p->s[end]))
        end++;
    /* "1979-05-27 07:32:00": a date, one space, then a time */
    if (end - start == 10 && p->s[start + 4] == '-' && p->s[start + 7] == '-' && end + 1 < p->len &&
        p->s[end] == ' ' && p->s[end + 1] >= '0' && p->s[end + 1] <= '9') {
        end++;
        while (end < p->len && is_token_char((unsigned char)p->s[end]))
            end++;
    }
    weir__toml_scalar sc;
    size_t err_off = 0;
    char msg[sizeof(p->err->message)];
    if (!weir__toml_scalar_parse(p->s + start, end - start, &sc, &err_off, msg, sizeof(msg))) {
        fail(p, start + err_off, "%s", msg);
        return NULL;
    }
    weir_toml_value *v = new_value(p, sc.type, start);
    if (!v)
        return NULL;
    if (sc.type == WEIR_TOML_INTEGER)
        v->u.i = sc.u.i;
    else if (sc.type == WEIR_TOML_FLOAT)
        v->u.f = sc.u.f;
    else
        v->u.dt = sc.u.dt;
    p->pos = end;
    return v;
}

static weir_toml_value *parse_value(parser *p)
{
    size_t off = p->pos;
    int c = peek(p);
    weir_toml_value *v;
    switch (c) {
    case '"':
    case '\'':
        if (!parse_string_raw(p, false))
            return NULL;
        v = new_value(p, WEIR_TOML_STRING, off);
        if (!v)
            return NULL;
        v->u.str.len = p->buf_len;
        v->u.str.ptr = buf_to_arena(p);
        return v->u.str.ptr ? v : NULL;
    case '[':
        return parse_array(p);
    case '{':
        return parse_inline_table(p);
    case 't':
    case 'f': {
        bool b = c == 't';
        const char *word = b ? "true" : "false";
        size_t n = strlen(word);
        if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0 ||
            (p->pos + n < p->len && is_token_char((unsigned char)p->s[p->pos + n])))
            break;
        v = new_value(p, WEIR_TOML_BOOL, off);
        if (!v)
            return NULL;
        v->u.b = b;
        p->pos += n;
        return v;
    }
    case -1:
        fail(p, off, "expected a value, found the end of the input");
        return NULL;
    case '\n':
    case '\r':
        fail(p, off, "expected a value, found the end of the line");
        return NULL;
    default:
        if ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'i' || c == 'n')
            return parse_scalar(p);
        break;
    }
    fail(p, off, "expected a value (string, number, boolean, date/time, array or table)");
    return NULL;
}

/* ---- document ---- */

/* Checks that the whole input is UTF-8 without overlongs or surrogates. */
static bool check_utf8(parser *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    for (size_t i = 0; i < p->len;) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return fail(p, i, "invalid UTF-8");
        }
        if (p->len - i < n)
            return fail(p, i, "invalid UTF-8");
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return fail(p, i, "invalid UTF-8");
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return fail(p, i, "invalid UTF-8");
        i += n;
    }
    return true;
}

static bool parse_document(parser *p)
{
    if (!check_utf8(p))
        return false;
    if (p->len >= 3 && memcmp(p->s, "\xEF\xBB\xBF", 3) == 0)
        p->pos = 3; /* a byte order mark */
    while (p->pos < p->len) {
        skip_ws(p);
        int c = peek(p);
        if (c == '[') {
            if (!parse_header(p) || !end_of_line(p, "a table header"))
                return false;
        } else if (c == '#' || c == '\n' || c == '\r' || c < 0) {
            if (!end_of_line(p, "a comment"))
                return false;
        } else {
            if (!parse_keyval(p, p->cur) || !end_of_line(p, "a value"))
                return false;
        }
    }
    return true;
}

weir_toml_value *weir_toml_parse(const char *text, size_t len, weir_toml_error *err)
{
    parser p = {.s = text, .len = len, .err = err, .loc_line = 1, .loc_col = 1};
    if (err)
        memset(err, 0, sizeof(*err));
    p.d = calloc(1, sizeof(doc));
    if (!p.d) {
        fail(&p, 0, "out of memory");
        return NULL;
    }
    p.d->root.type = WEIR_TOML_TABLE;
    p.d->root.flags = F_EXPLICIT;
    p.d->root.line = p.d->root.column = 1;
    p.cur = &p.d->root;
    if (!text && len) {
        p.len = 0;
        fail(&p, 0, "no input");
    } else {
        parse_document(&p);
    }
    free(p.buf);
    if (p.failed) {
        doc_free(p.d);
        return NULL;
    }
    return &p.d->root;
}

void weir_toml_free(weir_toml_value *root)
{
    if (root)
        doc_free((doc *)root);
}

int weir_toml_error_format(const weir_toml_error *err, const char *file, char *buf, size_t size)
{
    return snprintf(buf, size, "%s:%d:%d: %s", file ? file : "-", err->line, err->column,
                    err->message);
}

/* ---- accessors ---- */

weir_toml_type weir_toml_type_of(const weir_toml_value *v)
{
    return (weir_toml_type)v->type;
}

const char *weir_toml_type_name(weir_toml_type type)
{
    switch (type) {
    case WEIR_TOML_TABLE:
        return "table";
    case WEIR_TOML_ARRAY:
        return "array";
    case WEIR_TOML_STRING:
        return "string";
    case WEIR_TOML_INTEGER:
        return "integer";
    case WEIR_TOML_FLOAT:
        return "float";
    case WEIR_TOML_BOOL:
        return "boolean";
    case WEIR_TOML_DATETIME:
        return "offset date-time";
    case WEIR_TOML_DATETIME_LOCAL:
        return "local date-time";
    case WEIR_TOML_DATE_LOCAL:
        return "local date";
    case WEIR_TOML_TIME_LOCAL:
        return "local time";
    }
    return "unknown";
}

int weir_toml_line(const weir_toml_value *v)
{
    return v->line;
}

int weir_toml_column(const weir_toml_value *v)
{
    return v->column;
}

size_t weir_toml_table_count(const weir_toml_value *t)
{
    return t && t->type == WEIR_TOML_TABLE ? t->u.tab.n : 0;
}

static void fill_entry(const kv *e, weir_toml_entry *out)
{
    out->key = e->key;
    out->key_len = e->key_len;
    out->line = e->line;
    out->column = e->column;
    out->value = e->val;
}

bool weir_toml_table_entry(const weir_toml_value *t, size_t i, weir_toml_entry *out)
{
    if (!t || t->type != WEIR_TOML_TABLE || i >= t->u.tab.n)
        return false;
    fill_entry(&t->u.tab.items[i], out);
    return true;
}

const weir_toml_value *weir_toml_table_getn(const weir_toml_value *t, const char *key,
                                            size_t key_len, weir_toml_entry *entry)
{
    if (!t || t->type != WEIR_TOML_TABLE)
        return NULL;
    const kv *e = table_find(t, key, key_len);
    if (!e)
        return NULL;
    if (entry)
        fill_entry(e, entry);
    return e->val;
}

const weir_toml_value *weir_toml_table_get(const weir_toml_value *t, const char *key)
{
    return weir_toml_table_getn(t, key, strlen(key), NULL);
}

size_t weir_toml_array_count(const weir_toml_value *a)
{
    return a && a->type == WEIR_TOML_ARRAY ? a->u.arr.n : 0;
}

const weir_toml_value *weir_toml_array_at(const weir_toml_value *a, size_t i)
{
    if (!a || a->type != WEIR_TOML_ARRAY || i >= a->u.arr.n)
        return NULL;
    return a->u.arr.items[i];
}

const char *weir_toml_string(const weir_toml_value *v, size_t *len)
{
    if (!v || v->type != WEIR_TOML_STRING)
        return NULL;
    if (len)
        *len = v->u.str.len;
    return v->u.str.ptr;
}

bool weir_toml_int(const weir_toml_value *v, int64_t *out)
{
    if (!v || v->type != WEIR_TOML_INTEGER)
        return false;
    *out = v->u.i;
    return true;
}

bool weir_toml_double(const weir_toml_value *v, double *out)
{
    if (!v || v->type != WEIR_TOML_FLOAT)
        return false;
    *out = v->u.f;
    return true;
}

bool weir_toml_bool(const weir_toml_value *v, bool *out)
{
    if (!v || v->type != WEIR_TOML_BOOL)
        return false;
    *out = v->u.b;
    return true;
}

bool weir_toml_datetime_get(const weir_toml_value *v, weir_toml_datetime *out)
{
    if (!v || v->type < WEIR_TOML_DATETIME || v->type > WEIR_TOML_TIME_LOCAL)
        return false;
    *out = v->u.dt;
    return true;
}
