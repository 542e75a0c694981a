/*
 * files_mime.c - file extension -> media type, from /etc/mime.types and a
 * built-in table (files.h has the contract).
 *
 * An open-addressing hash table keyed by the lower-case extension, each
 * entry one allocation holding "ext\0type\0". Debian's file has about
 * 1,500 extensions; the table is read-only once loaded, so workers share
 * it without locks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/files.h"

#define EXT_MAX 63
#define TYPE_MAX 127
#define OCTET_STREAM "application/octet-stream"

typedef struct mime_entry {
    char *ext; /* "ext\0type\0", owned */
    const char *type;
} mime_entry;

struct weir_mime {
    mime_entry *slots; /* cap slots, a power of two; ext NULL when free */
    size_t cap;
    size_t n;
};

/* What a static site needs, where the system has no mime.types or it
 * misses one. */
static const struct {
    const char *ext, *type;
} builtin[] = {
    {"html", "text/html"},
    {"htm", "text/html"},
    {"shtml", "text/html"},
    {"css", "text/css"},
    {"js", "text/javascript"},
    {"mjs", "text/javascript"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain"},
    {"md", "text/markdown"},
    {"csv", "text/csv"},
    {"xml", "application/xml"},
    {"rss", "application/rss+xml"},
    {"atom", "application/atom+xml"},
    {"svg", "image/svg+xml"},
    {"svgz", "image/svg+xml"},
    {"png", "image/png"},
    {"apng", "image/apng"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/vnd.microsoft.icon"},
    {"bmp", "image/bmp"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tgz", "application/gzip"},
    {"br", "application/x-brotli"},
    {"zst", "application/zstd"},
    {"xz", "application/x-xz"},
    {"bz2", "application/x-bzip2"},
    {"tar", "application/x-tar"},
    {"7z", "application/x-7z-compressed"},
    {"mp4", "video/mp4"},
    {"m4v", "video/mp4"},
    {"webm", "video/webm"},
    {"ogv", "video/ogg"},
    {"mov", "video/quicktime"},
    {"mp3", "audio/mpeg"},
    {"m4a", "audio/mp4"},
    {"ogg", "audio/ogg"},
    {"oga", "audio/ogg"},
    {"opus", "audio/ogg"},
    {"wav", "audio/wav"},
    {"flac", "audio/flac"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"eot", "application/vnd.ms-fontobject"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"toml", "application/toml"},
    {"ics", "text/calendar"},
    {"vtt", "text/vtt"},
    {"epub", "application/epub+zip"},
};

#define N_BUILTIN (sizeof(builtin) / sizeof(builtin[0]))

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        h = (h ^ c) * 1099511628211u;
    }
    return h;
}

/* The slot holding ext (n bytes, any case), or the free one where it
 * would go. The table is never full (load <= 1/2). */
static mime_entry *slot(const weir_mime *m, const char *ext, size_t n)
{
    size_t i = (size_t)hash(ext, n) & (m->cap - 1);
    for (;;) {
        mime_entry *e = &m->slots[i];
        if (!e->ext || (strlen(e->ext) == n && strncasecmp(e->ext, ext, n) == 0))
            return e;
        i = (i + 1) & (m->cap - 1);
    }
}

static bool grow(weir_mime *m)
{
    size_t cap = m->cap ? m->cap * 2 : 256;
    mime_entry *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = calloc(cap, sizeof(*m->slots));
    if (!m->slots) {
        m->slots = old;
        return false;
    }
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].ext)
            *slot(m, old[i].ext, strlen(old[i].ext)) = old[i];
    }
    free(old);
    return true;
}

/* Adds ext -> type unless ext is there already (the first one wins).
 * False when out of memory. */
static bool add(weir_mime *m, const char *ext, size_t ext_len, const char *type, size_t type_len)
{
    if ((m->n + 1) * 2 > m->cap && !grow(m))
        return false;
    mime_entry *e = slot(m, ext, ext_len);
    if (e->ext)
        return true;
    char *p = malloc(ext_len + type_len + 2);
    if (!p)
        return false;
    for (size_t i = 0; i < ext_len; i++)
        p[i] = (ext[i] >= 'A' && ext[i] <= 'Z') ? (char)(ext[i] + 32) : ext[i];
    p[ext_len] = '\0';
    memcpy(p + ext_len + 1, type, type_len);
    p[ext_len + 1 + type_len] = '\0';
    e->ext = p;
    e->type = p + ext_len + 1;
    m->n++;
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* One line of mime.types: "type ext ext ...". Lines that are not are
 * skipped; false only when out of memory. */
static bool parse_line(weir_mime *m, char *line)
{
    char *hash_mark = strchr(line, '#');
    if (hash_mark)
        *hash_mark = '\0';
    char *p = line;
    while (is_space(*p))
        p++;
    const char *type = p;
    while (*p && !is_space(*p))
        p++;
    size_t type_len = (size_t)(p - type);
    if (type_len == 0 || type_len > TYPE_MAX || !memchr(type, '/', type_len))
        return true;
    /* It becomes a Content-Type value: nothing but visible ASCII. */
    for (size_t i = 0; i < type_len; i++) {
        if ((unsigned char)type[i] <= 0x20 || (unsigned char)type[i] >= 0x7f)
            return true;
    }
    for (;;) {
        while (is_space(*p))
            p++;
        if (!*p)
            return true;
        const char *ext = p;
        while (*p && !is_space(*p))
            p++;
        size_t ext_len = (size_t)(p - ext);
        if (ext_len <= EXT_MAX && !add(m, ext, ext_len, type, type_len))
            return false;
    }
}

weir_mime *weir__mime_load(const char *path)
{
    weir_mime *m = calloc(1, sizeof(*m));
    if (!m || !grow(m))
        goto fail;
    FILE *f = path ? fopen(path, "re") : NULL;
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        bool ok = true;
        while (ok && getline(&line, &cap, f) >= 0)
            ok = parse_line(m, line);
        free(line);
        fclose(f);
        if (!ok)
            goto fail;
    }
    for (size_t i = 0; i < N_BUILTIN; i++) {
        if (!add(m, builtin[i].ext, strlen(builtin[i].ext), builtin[i].type,
                 strlen(builtin[i].type)))
            goto fail;
    }
    return m;
fail:
    weir__mime_free(m);
    return NULL;
}

const char *weir__mime_type(const weir_mime *m, const char *name, size_t len)
{
    size_t base = len;
    while (base > 0 && name[base - 1] != '/')
        base--;
    size_t dot = len;
    while (dot > base && name[dot - 1] != '.')
        dot--;
    /* No dot, a trailing dot, or only a leading one (".bashrc"). */
    if (dot <= base + 1 || dot == len)
        return OCTET_STREAM;
    const char *ext = name + dot;
    size_t n = len - dot;
    if (n > EXT_MAX)
        return OCTET_STREAM;
    if (!m) {
        for (size_t i = 0; i < N_BUILTIN; i++) {
            if (strlen(builtin[i].ext) == n && strncasecmp(builtin[i].ext, ext, n) == 0)
                return builtin[i].type;
        }
        return OCTET_STREAM;
    }
    const mime_entry *e = slot(m, ext, n);
    return e->ext ? e->type : OCTET_STREAM;
}

void weir__mime_free(weir_mime *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].ext);
    free(m->slots);
    free(m);
}
