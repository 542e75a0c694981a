/*
 * test_toml.c - the TOML parser (src/app/toml.c): error positions and
 * messages, accessors, insertion order, key positions, limits.
 * Conformance to TOML 1.0 itself is tests/integration/test_toml_conformance.py.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/toml/toml.h"

static weir_toml_value *parse_ok(const char *text)
{
    weir_toml_error err;
    weir_toml_value *root = weir_toml_parse(text, strlen(text), &err);
    cr_assert(root, "parse failed: %d:%d: %s", err.line, err.column, err.message);
    return root;
}

/* Parses text that must fail at line:col with a message containing what. */
static void expect_error(const char *text, int line, int col, const char *what)
{
    weir_toml_error err;
    memset(&err, 0x55, sizeof(err));
    weir_toml_value *root = weir_toml_parse(text, strlen(text), &err);
    cr_assert_null(root, "parsed but should fail: %s", text);
    cr_expect_eq(err.line, line, "line %d, want %d (%s) for %s", err.line, line, err.message, text);
    cr_expect_eq(err.column, col, "column %d, want %d (%s) for %s", err.column, col, err.message,
                 text);
    cr_expect(strstr(err.message, what), "message '%s' lacks '%s'", err.message, what);
}

/* ---- error positions ---- */

Test(toml_error, duplicate_key_points_at_the_second_key)
{
    expect_error("a = 1\n  b = 2\n  a = 3\n", 3, 3, "duplicate key 'a' (first defined at line 1)");
    expect_error("[t]\nx.y = 1\nx.y = 2\n", 3, 3, "duplicate key 'y'");
    expect_error("p = {q = 1, q = 2}\n", 1, 13, "duplicate key 'q'");
}

Test(toml_error, bad_escape_points_at_the_backslash)
{
    expect_error("s = \"abc\\qdef\"\n", 1, 9, "invalid escape sequence '\\q'");
    expect_error("\n\ns = \"\\u12G4\"\n", 3, 6, "\\u escape needs 4 hex digits");
    expect_error("s = \"\\uD800\"\n", 1, 6, "not a Unicode scalar value");
    expect_error("s = \"\\U00110000\"\n", 1, 6, "not a Unicode scalar value");
    expect_error("s = \"\\e\"\n", 1, 6, "invalid escape");
}

Test(toml_error, unterminated_strings_point_at_the_opening_quote)
{
    expect_error("a = 1\nb = \"abc\nc = 2\n", 2, 5, "unterminated string");
    expect_error("b = 'abc", 1, 5, "unterminated string");
    expect_error("x = 1\nb = \"\"\"abc\n\ndef", 2, 5, "unterminated string");
    expect_error("b = '''abc''''''", 1, 11, "too many quotes");
}

Test(toml_error, invalid_dates_and_times_point_at_the_field)
{
    expect_error("d = 2023-02-29\n", 1, 13, "day 29 is out of range for 2023-02");
    expect_error("d = 2023-13-01\n", 1, 10, "month 13 is out of range");
    expect_error("d = 2023-01-01T24:00:00\n", 1, 16, "hour 24 is out of range");
    expect_error("t = 12:60:00\n", 1, 8, "minute 60 is out of range");
    expect_error("d = 2023-01-01T10:00:00+25:00\n", 1, 24, "offset");
    expect_error("d = 2023-01-01T10:00\n", 1, 16, "expected HH:MM:SS");
    expect_error("t = 10:00:00Z\n", 1, 13, "invalid character in a time");
}

Test(toml_error, leap_years_follow_the_gregorian_rules)
{
    weir_toml_free(parse_ok("a = 2024-02-29\nb = 2000-02-29\n"));
    expect_error("a = 1900-02-29\n", 1, 13, "out of range");
}

Test(toml_error, table_redefinitions)
{
    expect_error("[a]\nx = 1\n[a]\n", 3, 2, "table 'a' is already defined at line 1");
    expect_error("[a.b]\n[a]\n[a]\n", 3, 2, "already defined");
    expect_error("a = {x = 1}\n[a]\n", 2, 2, "already defined at line 1 as an inline table");
    expect_error("a = {x = 1}\n[a.b]\n", 2, 2, "inline table");
    expect_error("a = {x = 1}\na.y = 2\n", 2, 1, "cannot add keys to inline table 'a'");
    expect_error("[[a]]\n[a]\n", 2, 2, "array of tables");
    expect_error("a = [1]\n[[a]]\n", 2, 3, "as an array");
    expect_error("[a]\nb.c = 1\n[a.b]\n", 3, 4, "table 'b' is already defined");
    expect_error("[a.b.c]\n[a]\nb.c.d = 1\n", 3, 1, "cannot add keys to table 'b'");
    expect_error("a = 1\n[a]\n", 2, 2, "key 'a' is already defined at line 1 as an integer");
}

Test(toml_error, syntax_errors)
{
    expect_error("a = 1 b = 2\n", 1, 7, "expected a newline after a value");
    expect_error("a =\n", 1, 4, "expected a value, found the end of the line");
    expect_error("a = [1, 2\n", 1, 5, "unterminated array");
    expect_error("a = [1 2]\n", 1, 8, "expected ',' or ']'");
    expect_error("a = {b = 1,}\n", 1, 12, "trailing comma");
    expect_error("a = {b = 1\n}\n", 1, 11, "newline in an inline table");
    expect_error("= 1\n", 1, 1, "invalid character in a key");
    expect_error("a\n", 1, 2, "expected '=' after a key");
    expect_error("[a\n", 1, 3, "expected ']'");
    expect_error("a = 1\rb = 2\n", 1, 6, "carriage return");
    expect_error("# ok\n# bad \x01 here\n", 2, 7, "control character U+0001 in comment");
    expect_error("a = 01\n", 1, 5, "leading zeros");
    expect_error("a = 1__0\n", 1, 6, "'_' must be between two digits");
    expect_error("a = truee\n", 1, 5, "expected a value");
}

Test(toml_error, invalid_utf8_reports_its_character_column)
{
    /* é is one character: the bad byte is the 9th character of line 2 */
    expect_error("x = 1\n# \xc3\xa9 abc \xff\n", 2, 9, "invalid UTF-8");
    expect_error("s = \"\xc0\xaf\"\n", 1, 6, "invalid UTF-8");         /* overlong */
    expect_error("s = \"\xed\xa0\x80\"\n", 1, 6, "invalid UTF-8");     /* surrogate */
    expect_error("s = \"\xf4\x90\x80\x80\"\n", 1, 6, "invalid UTF-8"); /* > U+10FFFF */
    expect_error("s = \"\xe2\x82", 1, 6, "invalid UTF-8");             /* truncated */
}

Test(toml_error, crlf_lines_count_once)
{
    expect_error("a = 1\r\nb = 2\r\na = 3\r\n", 3, 1, "duplicate key");
}

Test(toml_error, formatted_as_file_line_column_message)
{
    weir_toml_error err;
    char buf[256];
    cr_assert_null(weir_toml_parse("a = 1\na = 2\n", 12, &err));
    weir_toml_error_format(&err, "weir.toml", buf, sizeof(buf));
    cr_assert_str_eq(buf, "weir.toml:2:1: duplicate key 'a' (first defined at line 1)");
    /* a NULL error struct is allowed */
    cr_assert_null(weir_toml_parse("a = ", 4, NULL));
}

/* ---- accessors ---- */

Test(toml_api, scalars)
{
    weir_toml_value *root = parse_ok("s = \"a\\u0000b\\u00e9\"\n"
                                     "lit = 'C:\\path'\n"
                                     "i = -42\n"
                                     "h = 0xff\n"
                                     "f = 6.25e-1\n"
                                     "inf = -inf\n"
                                     "t = true\n"
                                     "d = 1979-05-27T07:32:00.5-08:30\n"
                                     "ld = 1979-05-27\n"
                                     "lt = 23:59:60.123456789999\n"
                                     "ldt = 1979-05-27 00:00:01\n");
    size_t len;
    const char *s = weir_toml_string(weir_toml_table_get(root, "s"), &len);
    cr_assert_eq(len, 5);
    cr_assert(memcmp(s, "a\0b\xc3\xa9", 5) == 0);
    cr_assert_eq(s[5], '\0');
    cr_assert_str_eq(weir_toml_string(weir_toml_table_get(root, "lit"), NULL), "C:\\path");

    int64_t i = 0;
    cr_assert(weir_toml_int(weir_toml_table_get(root, "i"), &i));
    cr_assert_eq(i, -42);
    cr_assert(weir_toml_int(weir_toml_table_get(root, "h"), &i));
    cr_assert_eq(i, 255);
    double f = 0;
    cr_assert(weir_toml_double(weir_toml_table_get(root, "f"), &f));
    cr_assert_eq(f, 0.625);
    cr_assert(weir_toml_double(weir_toml_table_get(root, "inf"), &f));
    cr_assert(f < -1e308 && f * 0 != 0);
    bool b = false;
    cr_assert(weir_toml_bool(weir_toml_table_get(root, "t"), &b));
    cr_assert(b);

    weir_toml_datetime dt;
    const weir_toml_value *d = weir_toml_table_get(root, "d");
    cr_assert_eq(weir_toml_type_of(d), WEIR_TOML_DATETIME);
    cr_assert(weir_toml_datetime_get(d, &dt));
    cr_assert(dt.has_date && dt.has_time && dt.has_offset && !dt.offset_z);
    cr_assert_eq(dt.year, 1979);
    cr_assert_eq(dt.month, 5);
    cr_assert_eq(dt.day, 27);
    cr_assert_eq(dt.hour, 7);
    cr_assert_eq(dt.nanosecond, 500000000);
    cr_assert_eq(dt.frac_digits, 1);
    cr_assert_eq(dt.offset_minutes, -510);

    cr_assert_eq(weir_toml_type_of(weir_toml_table_get(root, "ld")), WEIR_TOML_DATE_LOCAL);
    cr_assert(weir_toml_datetime_get(weir_toml_table_get(root, "lt"), &dt));
    cr_assert(!dt.has_date && dt.has_time && !dt.has_offset);
    cr_assert_eq(dt.second, 60);
    cr_assert_eq(dt.nanosecond, 123456789); /* truncated, not rounded */
    cr_assert_eq(dt.frac_digits, 9);
    cr_assert_eq(weir_toml_type_of(weir_toml_table_get(root, "ldt")), WEIR_TOML_DATETIME_LOCAL);
    weir_toml_free(root);
}

Test(toml_api, type_mismatches_and_null_are_refused)
{
    weir_toml_value *root = parse_ok("s = 'x'\na = [1, 'two', [3]]\n");
    const weir_toml_value *s = weir_toml_table_get(root, "s");
    int64_t i = 7;
    double f = 7;
    bool b = true;
    weir_toml_datetime dt;
    cr_assert(!weir_toml_int(s, &i) && i == 7);
    cr_assert(!weir_toml_double(s, &f) && f == 7);
    cr_assert(!weir_toml_bool(s, &b) && b);
    cr_assert(!weir_toml_datetime_get(s, &dt));
    cr_assert_null(weir_toml_string(NULL, NULL));
    cr_assert_null(weir_toml_table_get(s, "x"));
    cr_assert_null(weir_toml_table_get(root, "missing"));
    cr_assert_null(weir_toml_table_get(weir_toml_table_get(root, "nope"), "x"));
    cr_assert_eq(weir_toml_table_count(s), 0);
    cr_assert_eq(weir_toml_array_count(s), 0);

    const weir_toml_value *a = weir_toml_table_get(root, "a");
    cr_assert_eq(weir_toml_array_count(a), 3); /* mixed types are fine in TOML 1.0 */
    cr_assert_eq(weir_toml_type_of(weir_toml_array_at(a, 1)), WEIR_TOML_STRING);
    cr_assert_eq(weir_toml_type_of(weir_toml_array_at(a, 2)), WEIR_TOML_ARRAY);
    cr_assert_null(weir_toml_array_at(a, 3));
    weir_toml_entry e;
    cr_assert(!weir_toml_table_entry(root, 2, &e));
    cr_assert(!weir_toml_table_entry(a, 0, &e));
    cr_assert_str_eq(weir_toml_type_name(WEIR_TOML_DATE_LOCAL), "local date");
    weir_toml_free(root);
    weir_toml_free(NULL);
}

Test(toml_api, keys_with_nul_use_getn)
{
    weir_toml_value *root = parse_ok("\"a\\u0000b\" = 1\n");
    weir_toml_entry e;
    cr_assert_not_null(weir_toml_table_getn(root, "a\0b", 3, &e));
    cr_assert_eq(e.key_len, 3);
    cr_assert_null(weir_toml_table_get(root, "a"));
    weir_toml_free(root);
}

Test(toml_api, tables_keep_insertion_order)
{
    weir_toml_value *root = parse_ok("zeta = 1\nalpha = 2\n[mid]\nx = 1\n[[arr]]\n"
                                     "[mid.sub]\n[beta]\n'quoted key' = 3\n");
    static const char *want[] = {"zeta", "alpha", "mid", "arr", "beta"};
    cr_assert_eq(weir_toml_table_count(root), 5);
    for (size_t i = 0; i < 5; i++) {
        weir_toml_entry e;
        cr_assert(weir_toml_table_entry(root, i, &e));
        cr_assert_str_eq(e.key, want[i]);
        cr_assert_eq(e.key_len, strlen(want[i]));
    }
    const weir_toml_value *mid = weir_toml_table_get(root, "mid");
    weir_toml_entry e;
    cr_assert(weir_toml_table_entry(mid, 1, &e));
    cr_assert_str_eq(e.key, "sub");
    cr_assert_not_null(weir_toml_table_get(weir_toml_table_get(root, "beta"), "quoted key"));
    weir_toml_free(root);
}

/* ---- positions ---- */

Test(toml_pos, keys_and_values_remember_where_they_were_written)
{
    weir_toml_value *root = parse_ok("# config\n"
                                     "[upstreams.api]\n"
                                     "  adrs = \"10.0.0.1:80\"\n"
                                     "\tweight.max = 5\n"
                                     "[[route]]\n"
                                     "path = '/'\n"
                                     "[[route]]\n"
                                     "  path = '/x'\n");
    weir_toml_entry e;
    const weir_toml_value *ups = weir_toml_table_get(root, "upstreams");
    cr_assert(weir_toml_table_getn(root, "upstreams", 9, &e));
    cr_assert_eq(e.line, 2); /* created implicitly by [upstreams.api] */
    cr_assert_eq(e.column, 2);

    const weir_toml_value *api = weir_toml_table_getn(ups, "api", 3, &e);
    cr_assert_eq(e.line, 2);
    cr_assert_eq(e.column, 12);
    cr_assert_eq(weir_toml_line(api), 2);
    cr_assert_eq(weir_toml_column(api), 1);

    cr_assert(weir_toml_table_entry(api, 0, &e));
    cr_assert_str_eq(e.key, "adrs");
    cr_assert_eq(e.line, 3);
    cr_assert_eq(e.column, 3);
    cr_assert_eq(weir_toml_line(e.value), 3);
    cr_assert_eq(weir_toml_column(e.value), 10);

    const weir_toml_value *w = weir_toml_table_getn(api, "weight", 6, &e);
    cr_assert_eq(e.line, 4);
    cr_assert_eq(e.column, 2);
    cr_assert(weir_toml_table_getn(w, "max", 3, &e));
    cr_assert_eq(e.line, 4);
    cr_assert_eq(e.column, 9);

    const weir_toml_value *routes = weir_toml_table_get(root, "route");
    cr_assert_eq(weir_toml_array_count(routes), 2);
    const weir_toml_value *r1 = weir_toml_array_at(routes, 1);
    cr_assert_eq(weir_toml_line(r1), 7);
    cr_assert(weir_toml_table_getn(r1, "path", 4, &e));
    cr_assert_eq(e.line, 8);
    cr_assert_eq(e.column, 3);
    weir_toml_free(root);
}

Test(toml_pos, implicit_table_moves_to_its_header_when_defined)
{
    weir_toml_value *root = parse_ok("[a.b]\nx = 1\n\n[a]\ny = 2\n");
    weir_toml_entry e;
    const weir_toml_value *a = weir_toml_table_getn(root, "a", 1, &e);
    cr_assert_eq(e.line, 4);
    cr_assert_eq(weir_toml_line(a), 4);
    weir_toml_free(root);
}

Test(toml_pos, columns_count_characters_after_multiline_strings)
{
    weir_toml_value *root = parse_ok("s = \"\"\"\nline\r\n\"\"\"\n\"é\" = 'ü'\n");
    weir_toml_entry e;
    const weir_toml_value *v = weir_toml_table_getn(root, "\xc3\xa9", 2, &e);
    cr_assert_eq(e.line, 4);
    cr_assert_eq(weir_toml_column(v), 7);
    cr_assert_str_eq(weir_toml_string(weir_toml_table_get(root, "s"), NULL), "line\n");
    weir_toml_free(root);
}

/* ---- limits ---- */

Test(toml_limits, integer_range)
{
    weir_toml_value *root = parse_ok("max = 9_223_372_036_854_775_807\n"
                                     "min = -9223372036854775808\n"
                                     "hex = 0x7fffffffffffffff\n");
    int64_t i;
    cr_assert(weir_toml_int(weir_toml_table_get(root, "max"), &i) && i == INT64_MAX);
    cr_assert(weir_toml_int(weir_toml_table_get(root, "min"), &i) && i == INT64_MIN);
    cr_assert(weir_toml_int(weir_toml_table_get(root, "hex"), &i) && i == INT64_MAX);
    weir_toml_free(root);
    expect_error("a = 9223372036854775808\n", 1, 5, "does not fit in 64 bits");
    expect_error("a = -9223372036854775809\n", 1, 5, "does not fit in 64 bits");
    expect_error("a = 0x8000000000000000\n", 1, 5, "does not fit in 64 bits");
    expect_error("a = 0b11111111111111111111111111111111111111111111111111111111111111111\n", 1, 5,
                 "does not fit in 64 bits");
    expect_error("a = 99999999999999999999999999\n", 1, 5, "does not fit");
}

static char *nested(int depth, char open, char close, const char *inner)
{
    size_t n = 4 + (size_t)depth * 8 + strlen(inner) + 2;
    char *s = malloc(n), *o = s;
    cr_assert_not_null(s);
    o += sprintf(o, "a = ");
    for (int i = 0; i < depth; i++)
        o += open == '[' ? sprintf(o, "[") : sprintf(o, "{b = ");
    o += sprintf(o, "%s", inner);
    for (int i = 0; i < depth; i++)
        *o++ = close;
    *o++ = '\n';
    *o = '\0';
    return s;
}

Test(toml_limits, nesting_depth)
{
    char *ok = nested(WEIR_TOML_MAX_DEPTH, '[', ']', "1");
    weir_toml_free(parse_ok(ok));
    free(ok);
    char *deep = nested(128, '[', ']', "1");
    expect_error(deep, 1, 5 + WEIR_TOML_MAX_DEPTH, "nested more than");
    free(deep);
    char *tables = nested(128, '{', '}', "1");
    weir_toml_error err;
    cr_assert_null(weir_toml_parse(tables, strlen(tables), &err));
    cr_assert(strstr(err.message, "nested more than"));
    free(tables);
    /* deep nesting that never closes */
    char open[100000];
    memset(open, '[', sizeof(open));
    memcpy(open, "a = ", 4);
    cr_assert_null(weir_toml_parse(open, sizeof(open), &err));
}

Test(toml_limits, reads_only_the_given_length)
{
    /* the bytes after len would make it valid or invalid */
    const char text[] = "a = 12\"junk";
    weir_toml_value *root = weir_toml_parse(text, 6, NULL);
    cr_assert_not_null(root);
    int64_t i;
    cr_assert(weir_toml_int(weir_toml_table_get(root, "a"), &i) && i == 12);
    weir_toml_free(root);
    cr_assert_null(weir_toml_parse("a = 'x'", 6, NULL));
    root = weir_toml_parse(NULL, 0, NULL);
    cr_assert_not_null(root);
    cr_assert_eq(weir_toml_table_count(root), 0);
    weir_toml_free(root);
}

Test(toml_limits, byte_order_mark_only_at_the_start)
{
    weir_toml_free(parse_ok("\xef\xbb\xbf"
                            "a = 1\n"));
    expect_error("a = 1\n\xef\xbb\xbf", 2, 1, "invalid character in a key");
}

Test(toml_pos, headers_locate_the_bracket_after_their_keys)
{
    /* the header's tables are created key by key, then the table itself is
     * placed at the '[': positions must survive going back on the line */
    weir_toml_value *root = parse_ok("x = 'é'\n  [[ \"ü\".list ]]\n[ab.\"é\".cd]\n");
    weir_toml_entry e;
    const weir_toml_value *u = weir_toml_table_getn(root, "\xc3\xbc", 2, &e);
    cr_assert_eq(e.line, 2);
    cr_assert_eq(e.column, 6);
    const weir_toml_value *list = weir_toml_table_getn(u, "list", 4, &e);
    cr_assert_eq(e.line, 2);
    cr_assert_eq(e.column, 10);
    cr_assert_eq(weir_toml_line(list), 2);
    cr_assert_eq(weir_toml_column(list), 3);
    cr_assert_eq(weir_toml_column(weir_toml_array_at(list, 0)), 3);
    const weir_toml_value *ab = weir_toml_table_get(root, "ab");
    const weir_toml_value *cd =
        weir_toml_table_getn(weir_toml_table_get(ab, "\xc3\xa9"), "cd", 2, &e);
    cr_assert_eq(e.line, 3);
    cr_assert_eq(e.column, 9);
    cr_assert_eq(weir_toml_line(cd), 3);
    cr_assert_eq(weir_toml_column(cd), 1);
    weir_toml_free(root);
}

Test(toml_limits, big_documents_parse_in_linear_time)
{
    /* 20,000 keys in one table and 20,000 headers: quadratic lookups or
     * position scans would take minutes under the sanitizers */
    size_t cap = 2 * 1000 * 1000, o = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    o += (size_t)sprintf(text + o, "[t]\n");
    for (int i = 0; i < 20000; i++)
        o += (size_t)sprintf(text + o, "k%d = %d\n", i, i);
    for (int i = 0; i < 20000; i++)
        o += (size_t)sprintf(text + o, "[[a.b]]\n[a.t%d]\n", i);
    weir_toml_error err;
    weir_toml_value *root = weir_toml_parse(text, o, &err);
    cr_assert_not_null(root, "%d:%d: %s", err.line, err.column, err.message);
    weir_toml_entry e;
    const weir_toml_value *t = weir_toml_table_get(root, "t");
    cr_assert_eq(weir_toml_table_count(t), 20000);
    cr_assert(weir_toml_table_getn(t, "k19999", 6, &e));
    cr_assert_eq(e.line, 20001);
    const weir_toml_value *a = weir_toml_table_get(root, "a");
    cr_assert_eq(weir_toml_array_count(weir_toml_table_get(a, "b")), 20000);
    cr_assert(weir_toml_table_getn(a, "t19999", 6, &e));
    cr_assert_eq(e.line, 20001 + 2 * 20000);
    cr_assert_eq(e.column, 4);
    weir_toml_free(root);
    /* and a duplicate at the end of a big table is still found */
    o += (size_t)sprintf(text + o, "[t]\n");
    cr_assert_null(weir_toml_parse(text, o, &err));
    cr_assert_eq(err.line, 60002);
    free(text);
}
