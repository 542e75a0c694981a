/*
 * h1_parse.c - HTTP/1.x message heads, body framing rules (RFC 9112) and the
 * chunked transfer-coding decoder.
 *
 * Head parsing runs in two steps. find_head_end() looks for the empty line
 * that ends the head with memchr(), resuming three bytes before where the
 * previous call stopped (the longest terminator, "\r\n\r\n", minus one), so
 * feeding a head in small pieces costs linear time. Once the head is
 * complete it is validated and split in a single pass of table-driven loops.
 * Every loop stops at the LF that ends the head, which is why they need no
 * bounds check of their own.
 *
 * Chunked decoder states (one byte at a time except DATA, which takes as
 * many bytes as are there):
 *
 *   SIZE_FIRST -hex-> SIZE -CR-> SIZE_LF -LF-> DATA -(n bytes)-> DATA_CR
 *                      |  \                      ^                  |
 *                    BWS   ";"-> EXT_* -CR-------+         DATA_LF <-CR
 *                      |            ^                           |
 *                   SIZE_WS -";"----+             SIZE_FIRST <-LF
 *
 *   SIZE_LF -LF, size 0-> TR_LINE -CR-> FINAL_LF -LF-> DONE
 *                           |  ^
 *                     tchar |  +----LF---- TR_LF <-CR- TR_VALUE
 *                           v                             ^
 *                         TR_NAME ---------":"------------+
 */
#include "http/h1_parse.h"

#include <limits.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Character classes, one bit each in char_class[]. */
enum {
    C_TCHAR = 1,   /* token character (RFC 9110 5.6.2) */
    C_VALUE = 2,   /* field-value byte: HTAB, SP, VCHAR, obs-text */
    C_TARGET = 4,  /* request-target byte: VCHAR, obs-text */
    C_HEX = 8,     /* HEXDIG, either case */
    C_QDTEXT = 16, /* quoted-string text: qdtext (no DQUOTE or backslash) */
    C_WS = 32,     /* SP, HTAB */
};

/* Generated from the RFC 9110 grammar; see the enum above for the bits. */
static const unsigned char char_class[256] = {
    /* 00 */ 0,  0,  0,  0,  0,  0,  0,  0,  0,  50, 0,  0,  0,  0,  0,  0,
    /* 10 */ 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    /* 20 */ 50, 23, 6,  23, 23, 23, 23, 23, 22, 22, 23, 23, 22, 23, 23, 22,
    /* 30 */ 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 22, 22, 22, 22, 22, 22,
    /* 40 */ 22, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    /* 50 */ 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 22, 6,  22, 23, 23,
    /* 60 */ 23, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    /* 70 */ 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 22, 23, 22, 23, 0,
    /* 80 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* 90 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* a0 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* b0 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* c0 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* d0 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* e0 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    /* f0 */ 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
};

#define IS(c, cls) (char_class[(unsigned char)(c)] & (cls))

/* Case-insensitive equality of buf[0..len) with the C string `lit`. */
static inline bool ieq(const char *buf, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && weir__ascii_ieq(buf, lit, n);
}

const char *weir_h1_strerror(int result)
{
    if (result > 0)
        return "complete";
    switch (result) {
    case WEIR_H1_INCOMPLETE:
        return "incomplete";
    case WEIR_H1_E_SYNTAX:
        return "malformed line";
    case WEIR_H1_E_METHOD:
        return "invalid method";
    case WEIR_H1_E_TARGET:
        return "invalid request-target";
    case WEIR_H1_E_VERSION:
        return "unsupported HTTP version";
    case WEIR_H1_E_STATUS:
        return "invalid status code";
    case WEIR_H1_E_BARE_CR:
        return "CR not followed by LF";
    case WEIR_H1_E_NUL:
        return "NUL byte in head";
    case WEIR_H1_E_HEADER_NAME:
        return "invalid header name";
    case WEIR_H1_E_WS_BEFORE_COLON:
        return "whitespace before colon in header";
    case WEIR_H1_E_OBS_FOLD:
        return "obsolete line folding";
    case WEIR_H1_E_HEADER_VALUE:
        return "invalid character in header value";
    case WEIR_H1_E_TOO_MANY_HEADERS:
        return "too many headers";
    case WEIR_H1_E_CL_AND_TE:
        return "both Content-Length and Transfer-Encoding";
    case WEIR_H1_E_CL_INVALID:
        return "invalid Content-Length";
    case WEIR_H1_E_CL_MULTIPLE:
        return "conflicting Content-Length values";
    case WEIR_H1_E_TE_NOT_CHUNKED:
        return "Transfer-Encoding does not end in chunked";
    case WEIR_H1_E_TE_HTTP10:
        return "Transfer-Encoding in an HTTP/1.0 request";
    case WEIR_H1_E_TE_INVALID:
        return "invalid Transfer-Encoding";
    case WEIR_H1_E_TE_UNSUPPORTED:
        return "transfer coding other than chunked";
    case WEIR_CHUNK_E_SIZE:
        return "invalid chunk size";
    case WEIR_CHUNK_E_EXT:
        return "invalid chunk extension";
    case WEIR_CHUNK_E_CRLF:
        return "missing CRLF in chunked body";
    case WEIR_CHUNK_E_TRAILER:
        return "invalid or oversized trailer section";
    }
    return "unknown error";
}

/* ---- message heads ---------------------------------------------------- */

/* True if the line whose LF is at buf[i] has no content ("" or "\r"). */
static inline bool line_is_empty(const char *buf, size_t i)
{
    if (i == 0 || buf[i - 1] == '\n')
        return true;
    return buf[i - 1] == '\r' && (i == 1 || buf[i - 2] == '\n');
}

/*
 * Returns the head length if buf[0..len) holds a complete head, 0 if not,
 * or WEIR_H1_E_BARE_CR for a line that starts with a bare CR (found here
 * rather than waiting for an end of head that a broken peer may never send).
 * The head ends at the first empty line that follows a non-empty one; empty
 * lines before any content are leading empty lines, never the end. Whether a
 * line is empty is decided by looking back at most two bytes, so this needs
 * no state besides *scan.
 */
static ssize_t find_head_end(const char *buf, size_t len, size_t *scan)
{
    size_t i = *scan > 3 ? *scan - 3 : 0;

    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        if (!lf)
            break;
        i = (size_t)(lf - buf);
        size_t j = i + 1;
        if (j < len && buf[j] == '\r')
            j++;
        if (j >= len)
            break; /* undecided: the next call restarts at or before i */
        if (buf[j] == '\n') {
            if (!line_is_empty(buf, i)) {
                *scan = j + 1;
                return (ssize_t)(j + 1);
            }
        } else if (j == i + 2) {
            return WEIR_H1_E_BARE_CR;
        }
        i++;
    }
    *scan = len;
    return 0;
}

/*
 * Error for the line starting at `line` (the head ends at `e`): a NUL or a
 * bare CR anywhere in the line take precedence over the syntax error `err`
 * that the caller found, so every such byte is reported the same way.
 */
static int line_error(const unsigned char *line, const unsigned char *e, int err)
{
    const unsigned char *lf = memchr(line, '\n', (size_t)(e - line));
    if (!lf)
        lf = e;
    if (memchr(line, '\0', (size_t)(lf - line)))
        return WEIR_H1_E_NUL;
    for (const unsigned char *p = line; p < lf; p++) {
        if (*p == '\r' && p + 1 != lf)
            return WEIR_H1_E_BARE_CR;
    }
    return err;
}

/* Consumes an end of line at *pp (CRLF or LF). */
static inline bool eat_eol(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    if (p[0] == '\n') {
        *pp = p + 1;
        return true;
    }
    if (p[0] == '\r' && p[1] == '\n') {
        *pp = p + 2;
        return true;
    }
    return false;
}

/* Skips field-value bytes; stops at the first other byte (at the latest at
 * the LF that ends the head). */
static inline const unsigned char *skip_value(const unsigned char *p, const unsigned char *e)
{
#ifdef __SSE2__
    /* Sixteen bytes a step: the first control byte other than HTAB, or
     * DEL, ends the value (the CR or LF of its line at the latest). */
    const __m128i ctl_max = _mm_set1_epi8(0x1f), htab = _mm_set1_epi8('\t'),
                  del = _mm_set1_epi8(0x7f);
    while (e - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v);
        __m128i bad =
            _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(v, htab), ctl), _mm_cmpeq_epi8(v, del));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    while (e - p >= 4 &&
           (char_class[p[0]] & char_class[p[1]] & char_class[p[2]] & char_class[p[3]] & C_VALUE))
        p += 4;
    while (IS(*p, C_VALUE))
        p++;
    return p;
}

/* Parses the field lines and the final empty line of a head. */
static int parse_fields(const unsigned char *p, const unsigned char *e, weir_header *headers,
                        size_t max_headers, size_t *n_headers)
{
    size_t n = 0;

    for (;;) {
        const unsigned char *line = p;
        if (eat_eol(&p))
            break; /* the empty line: find_head_end() made it the last one */
        if (IS(*p, C_WS))
            return WEIR_H1_E_OBS_FOLD;

        while (e - p >= 4 && (char_class[p[0]] & char_class[p[1]] & char_class[p[2]] &
                              char_class[p[3]] & C_TCHAR))
            p += 4;
        while (IS(*p, C_TCHAR))
            p++;
        if (*p != ':') {
            int err = WEIR_H1_E_HEADER_NAME;
            if (IS(*p, C_WS)) {
                while (IS(*p, C_WS))
                    p++;
                if (*p == ':')
                    err = WEIR_H1_E_WS_BEFORE_COLON;
            } else if (p != line && (*p == '\n' || (*p == '\r' && p[1] == '\n'))) {
                err = WEIR_H1_E_SYNTAX; /* no colon */
            }
            return line_error(line, e, err);
        }
        if (p == line)
            return WEIR_H1_E_HEADER_NAME;
        size_t name_len = (size_t)(p - line);

        p++;
        while (IS(*p, C_WS))
            p++;
        const unsigned char *value = p;
        p = skip_value(p, e);
        const unsigned char *value_end = p;
        if (!eat_eol(&p))
            return line_error(line, e, WEIR_H1_E_HEADER_VALUE);
        while (value_end > value && IS(value_end[-1], C_WS))
            value_end--;

        if (n == max_headers)
            return WEIR_H1_E_TOO_MANY_HEADERS;
        headers[n].name = (weir_str){(const char *)line, name_len};
        headers[n].value = (weir_str){(const char *)value, (size_t)(value_end - value)};
        n++;
    }
    *n_headers = n;
    return WEIR_OK;
}

static int parse_request_head(const char *buf, size_t head_len, weir_h1_request *req,
                              size_t max_headers)
{
    const unsigned char *p = (const unsigned char *)buf, *e = p + head_len;

    /* RFC 9112 2.2: skip empty lines before the request line. */
    while (p < e && (*p == '\n' || *p == '\r')) {
        if (!eat_eol(&p))
            return WEIR_H1_E_BARE_CR;
    }
    const unsigned char *line = p;

    const unsigned char *method = p;
    while (IS(*p, C_TCHAR))
        p++;
    if (*p != ' ' || p == method) {
        bool eol = *p == '\n' || (*p == '\r' && p[1] == '\n');
        return line_error(line, e, eol && p != method ? WEIR_H1_E_SYNTAX : WEIR_H1_E_METHOD);
    }
    req->method = (weir_str){(const char *)method, (size_t)(p - method)};

    const unsigned char *target = ++p;
    while (IS(*p, C_TARGET))
        p++;
    if (*p != ' ' || p == target) {
        bool eol = *p == '\n' || (*p == '\r' && p[1] == '\n');
        /* "GET /" with no version is HTTP/0.9, which we do not speak. */
        return line_error(line, e, eol && p != target ? WEIR_H1_E_VERSION : WEIR_H1_E_TARGET);
    }
    req->target = (weir_str){(const char *)target, (size_t)(p - target)};

    p++;
    if (e - p < 9 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return line_error(line, e, WEIR_H1_E_VERSION);
    req->minor_version = p[7] - '0';
    p += 8;
    if (!eat_eol(&p))
        return line_error(line, e, WEIR_H1_E_VERSION);

    return parse_fields(p, e, req->headers, max_headers, &req->n_headers);
}

static int parse_response_head(const char *buf, size_t head_len, weir_h1_response *resp,
                               size_t max_headers)
{
    const unsigned char *p = (const unsigned char *)buf, *e = p + head_len;
    const unsigned char *line = p;

    if (e - p < 9 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return line_error(line, e, WEIR_H1_E_VERSION);
    resp->minor_version = p[7] - '0';
    if (p[8] != ' ') {
        bool eol = p[8] == '\n' || (p[8] == '\r' && p[9] == '\n');
        return line_error(line, e, eol ? WEIR_H1_E_STATUS : WEIR_H1_E_VERSION);
    }
    p += 9;

    /* Each test only runs if the previous byte was a digit, never past e. */
    if (!(p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9'))
        return line_error(line, e, WEIR_H1_E_STATUS);
    int status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status < 100)
        return WEIR_H1_E_STATUS;
    p += 3;
    resp->status = status;

    const unsigned char *reason = p;
    if (*p == ' ') {
        /* RFC 9112 4: the SP is required, but "HTTP/1.1 200\r\n" is common. */
        reason = ++p;
        p = skip_value(p, e);
    }
    const unsigned char *reason_end = p;
    if (!eat_eol(&p))
        return line_error(line, e, reason == reason_end ? WEIR_H1_E_STATUS : WEIR_H1_E_SYNTAX);
    resp->reason = (weir_str){(const char *)reason, (size_t)(reason_end - reason)};

    return parse_fields(p, e, resp->headers, max_headers, &resp->n_headers);
}

int weir_h1_parse_request(const char *buf, size_t len, weir_h1_request *req, size_t max_headers,
                          size_t *scan)
{
    ssize_t head_len = find_head_end(buf, len, scan);
    if (head_len <= 0)
        return (int)head_len;
    if (head_len > INT_MAX)
        return WEIR_H1_E_SYNTAX; /* cannot be returned; callers limit heads far below */
    req->n_headers = 0;
    int r = parse_request_head(buf, (size_t)head_len, req, max_headers);
    return r < 0 ? r : (int)head_len;
}

int weir_h1_parse_response(const char *buf, size_t len, weir_h1_response *resp, size_t max_headers,
                           size_t *scan)
{
    /* Responses get no leading empty lines: answer early rather than wait. */
    if (len > 0 && (buf[0] == '\r' || buf[0] == '\n'))
        return WEIR_H1_E_SYNTAX;
    ssize_t head_len = find_head_end(buf, len, scan);
    if (head_len <= 0)
        return (int)head_len;
    if (head_len > INT_MAX)
        return WEIR_H1_E_SYNTAX;
    resp->n_headers = 0;
    int r = parse_response_head(buf, (size_t)head_len, resp, max_headers);
    return r < 0 ? r : (int)head_len;
}

/* ---- framing ---------------------------------------------------------- */

/*
 * Returns the next element of a comma-separated list in *elem, with OWS
 * trimmed; empty elements are returned too. False once the list is used up.
 */
static bool list_next(const char **pp, const char *e, weir_str *elem)
{
    const char *p = *pp;
    if (!p)
        return false;
    const char *comma = memchr(p, ',', (size_t)(e - p));
    const char *end = comma ? comma : e;
    *pp = comma ? comma + 1 : NULL;
    while (p < end && IS(*p, C_WS))
        p++;
    while (end > p && IS(end[-1], C_WS))
        end--;
    *elem = (weir_str){p, (size_t)(end - p)};
    return true;
}

bool weir_h1_list_has_token(weir_str value, const char *token)
{
    const char *p = value.ptr ? value.ptr : "", *e = p + value.len;
    weir_str elem;
    while (list_next(&p, e, &elem)) {
        if (ieq(elem.ptr, elem.len, token))
            return true;
    }
    return false;
}

/* What the framing-relevant headers of a message say. */
typedef struct framing_headers {
    int cl_status;   /* WEIR_OK or a Content-Length error */
    bool cl_present; /* a Content-Length field was seen */
    uint64_t cl;
    bool te_present;  /* a Transfer-Encoding field was seen */
    bool te_chunked;  /* ... and its last coding is chunked, applied once */
    bool te_invalid;  /* strict: an element outside RFC 9112's grammar, or chunked twice */
    bool te_other;    /* strict: a coding other than chunked */
    bool conn_close;  /* Connection: close */
    bool conn_keep;   /* Connection: keep-alive */
    bool conn_upgr;   /* Connection: upgrade */
    bool has_upgrade; /* an Upgrade field */
    bool expect_100;  /* Expect: 100-continue */
} framing_headers;

#define CL_MAX ((uint64_t)INT64_MAX) /* so that lengths also fit off_t */

/* Folds one Content-Length field value, "1*DIGIT" or (not strict) a list
 * of them. Strict: one field of one value, as nginx and HAProxy require of
 * requests; a list of equal values is what a smuggler sends to find the
 * hop that takes the first and the one that takes the last. */
static int parse_content_length(weir_str v, framing_headers *fh, bool strict)
{
    const char *p = v.ptr, *e = v.ptr + v.len;
    weir_str elem;
    if (!p)
        return WEIR_H1_E_CL_INVALID;
    if (strict && fh->cl_present)
        return WEIR_H1_E_CL_MULTIPLE;
    if (strict && memchr(v.ptr, ',', v.len))
        return WEIR_H1_E_CL_INVALID;
    while (list_next(&p, e, &elem)) {
        if (elem.len == 0)
            return WEIR_H1_E_CL_INVALID;
        uint64_t n = 0;
        for (size_t i = 0; i < elem.len; i++) {
            unsigned d = (unsigned char)elem.ptr[i] - '0';
            if (d > 9 || n > (CL_MAX - d) / 10)
                return WEIR_H1_E_CL_INVALID;
            n = n * 10 + d;
        }
        if (fh->cl_present && n != fh->cl)
            return WEIR_H1_E_CL_MULTIPLE;
        fh->cl_present = true;
        fh->cl = n;
    }
    return WEIR_OK;
}

/* Skips a token; returns where it ends. */
static const char *skip_token(const char *p, const char *e)
{
    while (p < e && IS(*p, C_TCHAR))
        p++;
    return p;
}

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && IS(*p, C_WS))
        p++;
    return p;
}

/*
 * RFC 9112 7 / RFC 9110 10.1.4: transfer-coding = token *( OWS ";" OWS
 * token BWS "=" BWS ( token / quoted-string ) ). Returns false for anything
 * else; *chunked says whether the coding is chunked.
 */
static bool te_element(weir_str elem, bool *chunked)
{
    const char *p = elem.ptr, *e = p + elem.len;
    const char *name_end = skip_token(p, e);
    if (name_end == p)
        return false;
    *chunked = ieq(p, (size_t)(name_end - p), "chunked");
    p = name_end;
    for (;;) {
        p = skip_ws(p, e);
        if (p == e)
            return true;
        if (*p++ != ';')
            return false;
        p = skip_ws(p, e);
        const char *pn = p;
        p = skip_token(p, e);
        if (p == pn)
            return false;
        p = skip_ws(p, e);
        if (p == e || *p++ != '=')
            return false;
        p = skip_ws(p, e);
        if (p < e && *p == '"') {
            for (p++;; p++) {
                if (p == e)
                    return false;
                if (*p == '"')
                    break;
                if (*p == '\\') {
                    if (++p == e || !IS(*p, C_VALUE))
                        return false;
                } else if (!IS(*p, C_QDTEXT)) {
                    return false;
                }
            }
            p++;
        } else {
            const char *pv = p;
            p = skip_token(p, e);
            if (p == pv)
                return false;
        }
    }
}

static void scan_framing_headers(const weir_header *h, size_t n, framing_headers *fh, bool strict)
{
    bool te_seen_chunked = false;

    memset(fh, 0, sizeof(*fh));
    for (size_t i = 0; i < n; i++) {
        weir_str name = h[i].name, v = h[i].value;
        const char *p = v.ptr ? v.ptr : "", *e = p + v.len;
        weir_str elem;

        /* Dispatch on length first: almost every header is none of these. */
        switch (name.len) {
        case 14:
            if (!ieq(name.ptr, name.len, "content-length"))
                break;
            if (fh->cl_status == WEIR_OK)
                fh->cl_status = parse_content_length(v, fh, strict);
            fh->cl_present = true;
            break;
        case 17:
            if (!ieq(name.ptr, name.len, "transfer-encoding"))
                break;
            fh->te_present = true;
            while (list_next(&p, e, &elem)) {
                bool chunked = false;
                if (strict) {
                    /* No empty elements either: ", chunked" and
                     * "chunked," are spellings some hop reads otherwise. */
                    if (!te_element(elem, &chunked) || (chunked && te_seen_chunked))
                        fh->te_invalid = true;
                    if (!chunked)
                        fh->te_other = true;
                } else if (elem.len == 0) {
                    continue; /* RFC 9110 5.6.1: empty list elements do not count */
                } else {
                    chunked = ieq(elem.ptr, elem.len, "chunked");
                }
                /* chunked applied twice is as bad as chunked not last */
                fh->te_chunked = chunked && !te_seen_chunked;
                te_seen_chunked = te_seen_chunked || chunked;
            }
            break;
        case 10:
            if (!ieq(name.ptr, name.len, "connection"))
                break;
            while (list_next(&p, e, &elem)) {
                fh->conn_close = fh->conn_close || ieq(elem.ptr, elem.len, "close");
                fh->conn_keep = fh->conn_keep || ieq(elem.ptr, elem.len, "keep-alive");
                fh->conn_upgr = fh->conn_upgr || ieq(elem.ptr, elem.len, "upgrade");
            }
            break;
        case 7:
            if (ieq(name.ptr, name.len, "upgrade"))
                fh->has_upgrade = true;
            break;
        case 6:
            if (ieq(name.ptr, name.len, "expect") && ieq(p, v.len, "100-continue"))
                fh->expect_100 = true;
            break;
        }
    }
}

static bool keep_alive_default(int minor_version, const framing_headers *fh)
{
    if (fh->conn_close)
        return false;
    return minor_version >= 1 || fh->conn_keep;
}

int weir_h1_request_framing(const weir_h1_request *req, weir_h1_framing *out)
{
    framing_headers fh;
    scan_framing_headers(req->headers, req->n_headers, &fh, true);

    memset(out, 0, sizeof(*out));
    if (fh.te_present) {
        /* RFC 9112 6.1: TE in HTTP/1.0 means faulty framing; TE with CL is
         * the classic smuggling vector; TE not ending in chunked leaves the
         * request body length unknowable. */
        if (req->minor_version == 0)
            return WEIR_H1_E_TE_HTTP10;
        if (fh.cl_present)
            return WEIR_H1_E_CL_AND_TE;
        if (fh.te_invalid)
            return WEIR_H1_E_TE_INVALID;
        if (!fh.te_chunked)
            return WEIR_H1_E_TE_NOT_CHUNKED;
        /* "gzip, chunked": weir would decode the chunks and drop the
         * coding; RFC 9112 6.1 says 501 for codings a server lacks. */
        if (fh.te_other)
            return WEIR_H1_E_TE_UNSUPPORTED;
        out->kind = WEIR_H1_BODY_CHUNKED;
    } else if (fh.cl_present) {
        if (fh.cl_status != WEIR_OK)
            return fh.cl_status;
        out->kind = WEIR_H1_BODY_LENGTH;
        out->content_length = fh.cl;
    } else {
        out->kind = WEIR_H1_BODY_NONE;
    }
    out->keep_alive = keep_alive_default(req->minor_version, &fh);
    /* RFC 9110 10.1.1 and 7.8: both are ignored in HTTP/1.0 requests. */
    out->expect_continue = req->minor_version >= 1 && fh.expect_100;
    out->upgrade = req->minor_version >= 1 && fh.conn_upgr && fh.has_upgrade;
    return WEIR_OK;
}

int weir_h1_response_framing(const weir_h1_response *resp, weir_str request_method,
                             weir_h1_framing *out)
{
    framing_headers fh;
    scan_framing_headers(resp->headers, resp->n_headers, &fh, false);

    memset(out, 0, sizeof(*out));
    /* Checked even when there is no body: the field is forwarded as is. */
    if (fh.cl_present && !fh.te_present && fh.cl_status != WEIR_OK)
        return fh.cl_status;

    out->keep_alive = keep_alive_default(resp->minor_version, &fh);
    out->upgrade = resp->status == 101 && fh.conn_upgr && fh.has_upgrade;

    int st = resp->status;
    bool is_head = request_method.len == 4 && memcmp(request_method.ptr, "HEAD", 4) == 0;
    bool is_connect = request_method.len == 7 && memcmp(request_method.ptr, "CONNECT", 7) == 0;
    if (is_head || (st >= 100 && st < 200) || st == 204 || st == 304 ||
        (is_connect && st >= 200 && st < 300)) {
        out->kind = WEIR_H1_BODY_NONE;
    } else if (fh.te_present) {
        /* RFC 9112 6.1/6.3: TE in HTTP/1.0 is faulty framing and TE not
         * ending in chunked reads until close. Either way, and when CL came
         * along with TE, do not reuse the upstream connection. */
        if (fh.te_chunked && resp->minor_version >= 1) {
            out->kind = WEIR_H1_BODY_CHUNKED;
            if (fh.cl_present)
                out->keep_alive = false;
        } else {
            out->kind = WEIR_H1_BODY_CLOSE;
        }
    } else if (fh.cl_present) {
        out->kind = WEIR_H1_BODY_LENGTH;
        out->content_length = fh.cl;
    } else {
        out->kind = WEIR_H1_BODY_CLOSE;
    }
    if (out->kind == WEIR_H1_BODY_CLOSE)
        out->keep_alive = false;
    return WEIR_OK;
}

/* ---- chunked decoder -------------------------------------------------- */

#define CHUNK_TRAILER_MAX (16 * 1024)
#define CHUNK_EXT_MAX                                                                              \
    4096 /* extension bytes per size line: they are dropped,                                       \
          * so nothing else would ever bound them */

enum chunk_state {
    CS_SIZE_FIRST,     /* first hex digit of a chunk size */
    CS_SIZE,           /* further hex digits, then BWS, ";" or CR */
    CS_SIZE_WS,        /* BWS after the size: only ";" may follow */
    CS_EXT_PRE_NAME,   /* after ";": BWS, then an extension name */
    CS_EXT_NAME,       /* in an extension name */
    CS_EXT_POST_NAME,  /* BWS after a name: "=" or ";" must follow */
    CS_EXT_PRE_VAL,    /* after "=": BWS, then a token or quoted-string */
    CS_EXT_VAL_TOKEN,  /* in a token value */
    CS_EXT_VAL_QUOTED, /* in a quoted-string value */
    CS_EXT_VAL_ESC,    /* after a backslash in a quoted-string */
    CS_EXT_VAL_END,    /* after the closing DQUOTE */
    CS_EXT_POST_VAL,   /* BWS after a value: only ";" may follow */
    CS_SIZE_LF,        /* CR ending the size line seen, LF must follow */
    CS_DATA,           /* d->remaining bytes of chunk data */
    CS_DATA_CR,        /* CRLF after the data: CR */
    CS_DATA_LF,        /* CRLF after the data: LF */
    CS_TR_LINE,        /* start of a trailer field line or of the final CRLF */
    CS_TR_NAME,        /* in a trailer field name */
    CS_TR_VALUE,       /* after the colon of a trailer field */
    CS_TR_LF,          /* CR ending a trailer field line seen */
    CS_FINAL_LF,       /* CR of the final empty line seen */
    CS_DONE,           /* message complete */
};

void weir_chunked_init(weir_chunked_decoder *d)
{
    memset(d, 0, sizeof(*d));
    d->state = CS_SIZE_FIRST;
}

static inline unsigned hex_value(unsigned char c)
{
    /* '0'-'9' -> 0-9; 'a'-'f' and 'A'-'F' have bit 6 set and low nibble 1-6 */
    return (c & 0xfu) + (c >> 6) * 9u;
}

ssize_t weir_chunked_decode(weir_chunked_decoder *d, const char *buf, size_t len,
                            weir_chunk_seg *segs, size_t max_segs, size_t *n_segs)
{
    const unsigned char *p, *e;
    weir_chunk_seg *trailer = NULL; /* open trailer segment, grown byte by byte */
    size_t ns = 0;
    int next = CS_DONE;

    *n_segs = 0;
    if (d->done || len == 0)
        return 0;
    p = (const unsigned char *)buf;
    e = p + len;

    while (p < e) {
        unsigned char c = *p;

        if (d->state >= CS_SIZE_WS && d->state <= CS_EXT_POST_VAL && ++d->ext_len > CHUNK_EXT_MAX)
            return WEIR_CHUNK_E_EXT;

        switch ((enum chunk_state)d->state) {
        case CS_DATA: {
            if (ns == max_segs)
                goto out;
            size_t n = (size_t)(e - p);
            if (n > d->remaining)
                n = (size_t)d->remaining;
            segs[ns++] = (weir_chunk_seg){WEIR_CHUNK_DATA, {(const char *)p, n}};
            p += n;
            d->remaining -= n;
            if (d->remaining == 0)
                d->state = CS_DATA_CR;
            continue;
        }
        case CS_SIZE_FIRST:
            if (!IS(c, C_HEX))
                return WEIR_CHUNK_E_SIZE;
            d->remaining = hex_value(c);
            d->n_digits = 1;
            d->ext_len = 0;
            d->state = CS_SIZE;
            break;
        case CS_SIZE:
            if (IS(c, C_HEX)) {
                if (++d->n_digits > 16 || d->remaining > ((uint64_t)INT64_MAX >> 4))
                    return WEIR_CHUNK_E_SIZE;
                d->remaining = d->remaining << 4 | hex_value(c);
            } else if (c == '\r') {
                d->state = CS_SIZE_LF;
            } else if (c == ';') {
                d->state = CS_EXT_PRE_NAME;
            } else if (IS(c, C_WS)) {
                d->state = CS_SIZE_WS;
            } else if (c == '\n') {
                return WEIR_CHUNK_E_CRLF;
            } else {
                return WEIR_CHUNK_E_SIZE;
            }
            break;
        case CS_SIZE_WS:
            if (c == ';')
                d->state = CS_EXT_PRE_NAME;
            else if (!IS(c, C_WS))
                return WEIR_CHUNK_E_SIZE;
            break;
        case CS_EXT_PRE_NAME:
            if (IS(c, C_TCHAR))
                d->state = CS_EXT_NAME;
            else if (!IS(c, C_WS))
                return WEIR_CHUNK_E_EXT;
            break;
        case CS_EXT_NAME:
        case CS_EXT_VAL_TOKEN:
        case CS_EXT_VAL_END:
            if (IS(c, C_TCHAR) && d->state != CS_EXT_VAL_END)
                break;
            if (c == '\r')
                d->state = CS_SIZE_LF;
            else if (c == ';')
                d->state = CS_EXT_PRE_NAME;
            else if (c == '=' && d->state == CS_EXT_NAME)
                d->state = CS_EXT_PRE_VAL;
            else if (IS(c, C_WS))
                d->state = d->state == CS_EXT_NAME ? CS_EXT_POST_NAME : CS_EXT_POST_VAL;
            else if (c == '\n')
                return WEIR_CHUNK_E_CRLF;
            else
                return WEIR_CHUNK_E_EXT;
            break;
        case CS_EXT_POST_NAME:
            if (c == '=')
                d->state = CS_EXT_PRE_VAL;
            else if (c == ';')
                d->state = CS_EXT_PRE_NAME;
            else if (!IS(c, C_WS))
                return WEIR_CHUNK_E_EXT;
            break;
        case CS_EXT_PRE_VAL:
            if (IS(c, C_TCHAR))
                d->state = CS_EXT_VAL_TOKEN;
            else if (c == '"')
                d->state = CS_EXT_VAL_QUOTED;
            else if (!IS(c, C_WS))
                return WEIR_CHUNK_E_EXT;
            break;
        case CS_EXT_VAL_QUOTED:
            if (c == '"')
                d->state = CS_EXT_VAL_END;
            else if (c == '\\')
                d->state = CS_EXT_VAL_ESC;
            else if (!IS(c, C_QDTEXT))
                return WEIR_CHUNK_E_EXT;
            break;
        case CS_EXT_VAL_ESC:
            if (!IS(c, C_VALUE)) /* HTAB / SP / VCHAR / obs-text */
                return WEIR_CHUNK_E_EXT;
            d->state = CS_EXT_VAL_QUOTED;
            break;
        case CS_EXT_POST_VAL:
            if (c == ';')
                d->state = CS_EXT_PRE_NAME;
            else if (!IS(c, C_WS))
                return WEIR_CHUNK_E_EXT;
            break;
        case CS_SIZE_LF:
            if (c != '\n')
                return WEIR_CHUNK_E_CRLF;
            d->state = d->remaining ? CS_DATA : CS_TR_LINE;
            break;
        case CS_DATA_CR:
            if (c != '\r')
                return WEIR_CHUNK_E_CRLF;
            d->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (c != '\n')
                return WEIR_CHUNK_E_CRLF;
            d->state = CS_SIZE_FIRST;
            break;

        /* Trailer field lines: validate, then append the byte to the open
         * trailer segment (below the switch). */
        case CS_TR_LINE:
            if (c == '\r') {
                trailer = NULL; /* the final empty line is not trailer data */
                d->state = CS_FINAL_LF;
                break;
            }
            if (c == '\n')
                return WEIR_CHUNK_E_CRLF;
            if (!IS(c, C_TCHAR)) /* also obs-fold and an empty name */
                return WEIR_CHUNK_E_TRAILER;
            next = CS_TR_NAME;
            goto trailer_byte;
        case CS_TR_NAME:
            if (c == ':')
                next = CS_TR_VALUE;
            else if (IS(c, C_TCHAR))
                next = CS_TR_NAME;
            else
                return WEIR_CHUNK_E_TRAILER; /* ws before colon, no colon, ... */
            goto trailer_byte;
        case CS_TR_VALUE:
            if (IS(c, C_VALUE))
                next = CS_TR_VALUE;
            else if (c == '\r')
                next = CS_TR_LF;
            else if (c == '\n')
                return WEIR_CHUNK_E_CRLF;
            else
                return WEIR_CHUNK_E_TRAILER;
            goto trailer_byte;
        case CS_TR_LF:
            if (c != '\n')
                return WEIR_CHUNK_E_CRLF;
            next = CS_TR_LINE;
            goto trailer_byte;
        case CS_FINAL_LF:
            if (c != '\n')
                return WEIR_CHUNK_E_CRLF;
            d->state = CS_DONE;
            d->done = true;
            p++;
            goto out;
        case CS_DONE:
            goto out;
        }
        p++;
        continue;

    trailer_byte:
        if (!trailer) {
            if (ns == max_segs)
                goto out;
            trailer = &segs[ns++];
            *trailer = (weir_chunk_seg){WEIR_CHUNK_TRAILER, {(const char *)p, 0}};
        }
        if (++d->trailer_len > CHUNK_TRAILER_MAX)
            return WEIR_CHUNK_E_TRAILER;
        trailer->bytes.len++;
        d->state = next;
        p++;
    }
out:
    *n_segs = ns;
    return (ssize_t)(p - (const unsigned char *)buf);
}
