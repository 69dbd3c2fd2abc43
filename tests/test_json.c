/* common/json: valid and invalid documents, escapes and surrogates, depth and size limits,
 * exact integers vs doubles, duplicate keys, error offsets, typed getters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/status.h"

#include "tests/check.h"


static ms_json_doc *parse_ok(const char *s) {
    ms_json_doc *d = NULL;
    ms_json_error e;
    int rc = ms_json_parse(s, strlen(s), NULL, &d, &e);
    CHECK(rc == 0 && d, "should parse: %s (%s)", s, e.msg);
    return d;
}

/* Expects failure; returns the error offset (or SIZE_MAX on unexpected success). */
static size_t parse_bad(const char *s, size_t len, const ms_json_opts *o, const char *why) {
    ms_json_doc *d = NULL;
    ms_json_error e;
    int rc = ms_json_parse(s, len, o, &d, &e);
    CHECK(rc == -MS_E_FORMAT && d == NULL, "should fail (%s): rc %d", why, rc);
    CHECK(rc == 0 || strlen(e.msg) > 0, "error message empty (%s)", why);
    if (rc == 0) {
        ms_json_free(d);
        return (size_t)-1;
    }
    return e.offset;
}

static void test_values(void) {
    ms_json_doc *d = parse_ok(" { \"a\" : [1, -2, 3.5, true, false, null, \"x\", {}, []] } ");
    const ms_json *r = ms_json_root(d);
    CHECK(ms_json_type_of(r) == MS_JSON_OBJECT && ms_json_len(r) == 1, "root object");
    const ms_json *a = ms_json_get(r, "a");
    CHECK(ms_json_type_of(a) == MS_JSON_ARRAY && ms_json_len(a) == 9, "array of 9");
    CHECK(ms_json_is_int(ms_json_at(a, 0)) && ms_json_int(ms_json_at(a, 0)) == 1, "1");
    CHECK(ms_json_int(ms_json_at(a, 1)) == -2, "-2");
    CHECK(!ms_json_is_int(ms_json_at(a, 2)) && ms_json_num(ms_json_at(a, 2)) == 3.5, "3.5");
    CHECK(ms_json_bool(ms_json_at(a, 3)) && !ms_json_bool(ms_json_at(a, 4)), "bools");
    CHECK(ms_json_type_of(ms_json_at(a, 4)) == MS_JSON_BOOL, "false is bool");
    CHECK(ms_json_type_of(ms_json_at(a, 5)) == MS_JSON_NULL, "null");
    CHECK(strcmp(ms_json_str(ms_json_at(a, 6), NULL), "x") == 0, "string");
    CHECK(ms_json_type_of(ms_json_at(a, 7)) == MS_JSON_OBJECT && ms_json_len(ms_json_at(a, 7)) == 0,
          "empty object");
    CHECK(ms_json_type_of(ms_json_at(a, 8)) == MS_JSON_ARRAY && ms_json_len(ms_json_at(a, 8)) == 0,
          "empty array");
    CHECK(ms_json_at(a, 9) == NULL && ms_json_get(a, "a") == NULL, "OOB / wrong type lookups");
    CHECK(ms_json_get(r, "b") == NULL, "absent key");
    CHECK(ms_json_offset(a) == 9, "offset of the array: %zu", ms_json_offset(a));
    CHECK(strcmp(ms_json_kind(ms_json_at(a, 0)), "integer") == 0 &&
              strcmp(ms_json_kind(ms_json_at(a, 2)), "number") == 0 &&
              strcmp(ms_json_kind(NULL), "absent") == 0,
          "kinds");
    ms_json_free(d);

    /* scalars at top level (RFC 8259 allows any value) */
    d = parse_ok("42");
    CHECK(ms_json_int(ms_json_root(d)) == 42, "top-level number");
    ms_json_free(d);
    d = parse_ok("\"s\"");
    CHECK(strcmp(ms_json_str(ms_json_root(d), NULL), "s") == 0, "top-level string");
    ms_json_free(d);
    ms_json_free(NULL);
}

static void test_numbers(void) {
    ms_json_doc *d = parse_ok("[9223372036854775807, -9223372036854775808, 9223372036854775808, "
                              "-0, 1e3, 2.0, 1E-6, -1.5e+2, 123456789012345678901234567890, 0]");
    const ms_json *a = ms_json_root(d);
    CHECK(ms_json_is_int(ms_json_at(a, 0)) && ms_json_int(ms_json_at(a, 0)) == INT64_MAX,
          "INT64_MAX exact");
    CHECK(ms_json_is_int(ms_json_at(a, 1)) && ms_json_int(ms_json_at(a, 1)) == INT64_MIN,
          "INT64_MIN exact");
    CHECK(!ms_json_is_int(ms_json_at(a, 2)) &&
              ms_json_num(ms_json_at(a, 2)) == 9223372036854775808.0,
          "2^63 is a double only");
    CHECK(ms_json_is_int(ms_json_at(a, 3)) && ms_json_int(ms_json_at(a, 3)) == 0, "-0 integer 0");
    CHECK(!ms_json_is_int(ms_json_at(a, 4)) && ms_json_num(ms_json_at(a, 4)) == 1000.0,
          "1e3 is not an integer literal");
    CHECK(!ms_json_is_int(ms_json_at(a, 5)) && ms_json_num(ms_json_at(a, 5)) == 2.0,
          "2.0 is not an integer literal");
    CHECK(ms_json_num(ms_json_at(a, 6)) == 1e-6, "1E-6");
    CHECK(ms_json_num(ms_json_at(a, 7)) == -150.0, "-1.5e+2");
    CHECK(!ms_json_is_int(ms_json_at(a, 8)) && ms_json_num(ms_json_at(a, 8)) > 1e29,
          "huge integer literal -> double");
    CHECK(ms_json_is_int(ms_json_at(a, 9)), "0");
    ms_json_free(d);

    const char *bad[] = {"01", "-", "1.", ".5", "1e", "1e+", "+1", "0x10", "NaN", "Infinity",
                         "-Infinity", "1e999", "--1", "1.e5", "00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_bad(bad[i], strlen(bad[i]), NULL, bad[i]);
}

static void test_strings(void) {
    ms_json_doc *d = parse_ok("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u4e2d\", "
                              "\"\\ud83d\\ude00\", \"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\", "
                              "\"nul\\u0000x\", \"\\u0041\"]");
    const ms_json *a = ms_json_root(d);
    size_t n;
    const char *s = ms_json_str(ms_json_at(a, 0), &n);
    CHECK(s && strcmp(s, "a\"b\\c/d\b\f\n\r\t") == 0 && n == 12, "simple escapes");
    s = ms_json_str(ms_json_at(a, 1), &n);
    CHECK(s && strcmp(s, "\xc3\xa9\xe4\xb8\xad") == 0 && n == 5, "BMP \\u escapes -> UTF-8");
    s = ms_json_str(ms_json_at(a, 2), &n);
    CHECK(s && strcmp(s, "\xf0\x9f\x98\x80") == 0 && n == 4, "surrogate pair -> 4-byte UTF-8");
    s = ms_json_str(ms_json_at(a, 3), &n);
    CHECK(s && strcmp(s, "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80") == 0, "raw UTF-8 passes");
    s = ms_json_str(ms_json_at(a, 4), &n);
    CHECK(s && n == 5 && memcmp(s, "nul\0x", 5) == 0, "\\u0000 kept with length");
    s = ms_json_str(ms_json_at(a, 5), &n);
    CHECK(s && strcmp(s, "A") == 0, "\\u0041");
    ms_json_free(d);

    struct {
        const char *doc;
        size_t err_at;
    } bad[] = {
        {"\"abc", 0},                  /* unterminated */
        {"\"a\\x\"", 2},               /* bad escape */
        {"\"\\u12G4\"", 1},            /* bad hex */
        {"\"\\ud800\"", 1},            /* lone high surrogate */
        {"\"\\udc00\"", 1},            /* lone low surrogate */
        {"\"\\ud800\\u0041\"", 1},     /* high + non-low */
        {"\"a\x01\"", 2},              /* control character */
        {"\"\xff\"", 1},               /* invalid byte */
        {"\"\xc0\xaf\"", 1},           /* overlong '/' */
        {"\"\xe0\x80\xaf\"", 1},       /* overlong 3-byte */
        {"\"\xed\xa0\x80\"", 1},       /* UTF-8 encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", 1},   /* above U+10FFFF */
        {"\"\xe4\xb8\"", 1},           /* truncated sequence */
        {"\"\\u00\"", 1},              /* short \u */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t at = parse_bad(bad[i].doc, strlen(bad[i].doc), NULL, bad[i].doc);
        CHECK(at == bad[i].err_at, "case %zu: error at %zu, expected %zu", i, at, bad[i].err_at);
    }
    CHECK(ms_json_utf8_valid("\xe4\xb8\xad", 3) && !ms_json_utf8_valid("\xe4\xb8", 2),
          "utf8_valid");
    char esc[32];
    ms_json_escape("a\nb\x01\xff", 5, esc, sizeof esc);
    CHECK(strcmp(esc, "a\\nb\\x01\\xFF") == 0, "escape: %s", esc);
    ms_json_escape("abcdefghijklmnopqrstuvwxyz", 26, esc, 12);
    CHECK(strcmp(esc, "abcdefgh...") == 0, "escape truncates: %s", esc);
}

static void test_structure_errors(void) {
    struct {
        const char *doc;
        size_t err_at;
    } bad[] = {
        {"", 0},              {"   ", 3},          {"[1,]", 3},          {"[1 2]", 3},
        {"{\"a\":1,}", 7},    {"{\"a\" 1}", 5},     {"{a:1}", 1},         {"{\"a\":}", 5},
        {"[1] x", 4},         {"{} {}", 3},         {"tru", 0},           {"nul", 0},
        {"[", 1},             {"{\"a\":1", 6},      {"// c\n{}", 0},      {"\xef\xbb\xbf{}", 0},
        {"[1,\n 2,\n x]", 9}, {"'a'", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t at = parse_bad(bad[i].doc, strlen(bad[i].doc), NULL, bad[i].doc);
        CHECK(at == bad[i].err_at, "'%s': error at %zu, expected %zu", bad[i].doc, at,
              bad[i].err_at);
    }
    /* line/col in the message */
    ms_json_doc *d = NULL;
    ms_json_error e;
    const char *s = "{\n  \"a\": 1,\n  \"b\": ?\n}";
    CHECK(ms_json_parse(s, strlen(s), NULL, &d, &e) == -MS_E_FORMAT, "bad char");
    CHECK(e.line == 3 && e.col == 8 && e.offset == 19, "line %u col %u off %zu", e.line, e.col,
          e.offset);
    CHECK(strstr(e.msg, "line 3, col 8 (byte 19)") != NULL, "message: %s", e.msg);
    /* embedded NUL in the middle of a document is just a bad byte */
    CHECK(parse_bad("[1,\0 2]", 7, NULL, "NUL byte") == 3, "NUL byte offset");
    /* non-terminated buffer: the parser must not read past len */
    char buf[4] = {'[', '1', ']', '7'};
    CHECK(ms_json_parse(buf, 3, NULL, &d, &e) == 0, "length-bounded parse");
    ms_json_free(d);
    CHECK(ms_json_parse(buf, 2, NULL, &d, &e) == -MS_E_FORMAT, "cut at len");
}

static void test_limits(void) {
    /* depth: 64 nested arrays pass, 65 fail */
    char deep[300];
    for (int depth = 64; depth <= 65; depth++) {
        int k = 0;
        for (int i = 0; i < depth; i++) deep[k++] = '[';
        for (int i = 0; i < depth; i++) deep[k++] = ']';
        ms_json_doc *d = NULL;
        ms_json_error e;
        int rc = ms_json_parse(deep, (size_t)k, NULL, &d, &e);
        CHECK(depth == 64 ? rc == 0 : rc == -MS_E_FORMAT, "depth %d rc %d", depth, rc);
        if (rc) CHECK(e.offset == 64 && strstr(e.msg, "nesting"), "depth error: %s", e.msg);
        ms_json_free(d);
    }
    /* very deep input (100k) must not overflow the stack */
    size_t big = 200000;
    char *p = ms_malloc(big);
    memset(p, '[', big / 2);
    memset(p + big / 2, ']', big / 2);
    parse_bad(p, big, NULL, "100k nesting");
    memset(p, '{', big);
    parse_bad(p, big, NULL, "100k braces");
    ms_free(p);

    ms_json_opts o = {.max_depth = 2};
    parse_bad("[[[]]]", 6, &o, "custom depth");
    o = (ms_json_opts){.max_size = 4};
    parse_bad("[1,2]", 5, &o, "max_size");
    o = (ms_json_opts){.max_nodes = 3};
    parse_bad("[1,2,3]", 7, &o, "max_nodes");
    o = (ms_json_opts){.max_nodes = 4};
    ms_json_doc *d = NULL;
    CHECK(ms_json_parse("[1,2,3]", 7, &o, &d, NULL) == 0 && ms_json_node_count(d) == 4,
          "max_nodes exact");
    ms_json_free(d);
}

static void test_objects(void) {
    /* small and large objects (the large ones use the sorted index) */
    for (int n = 1; n <= 200; n += 199) {
        char *s = ms_malloc(16 * (size_t)n + 8);
        size_t k = 0;
        s[k++] = '{';
        for (int i = 0; i < n; i++)
            k += (size_t)sprintf(s + k, "%s\"k%d\":%d", i ? "," : "", n - i, i);
        s[k++] = '}';
        ms_json_doc *d = NULL;
        CHECK(ms_json_parse(s, k, NULL, &d, NULL) == 0, "object of %d", n);
        const ms_json *r = ms_json_root(d);
        CHECK(ms_json_len(r) == (uint32_t)n, "member count");
        for (int i = 0; i < n; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", n - i);
            CHECK(ms_json_int(ms_json_get(r, key)) == i, "lookup %s", key);
            size_t kl;
            CHECK(strcmp(ms_json_key_at(r, (uint32_t)i, &kl), key) == 0 && kl == strlen(key),
                  "document order %d", i);
            CHECK(ms_json_int(ms_json_value_at(r, (uint32_t)i)) == i, "value_at");
        }
        CHECK(ms_json_get(r, "k0") == NULL && ms_json_get(r, "k") == NULL &&
                  ms_json_get(r, "") == NULL,
              "absent keys");
        ms_json_free(d);

        /* duplicate: the later occurrence is reported, with the first's offset */
        s[k - 1] = ',';
        k += (size_t)sprintf(s + k, "\"k%d\":0}", n);
        ms_json_error e;
        CHECK(ms_json_parse(s, k, NULL, &d, &e) == -MS_E_FORMAT, "duplicate key in %d", n);
        CHECK(strstr(e.msg, "duplicate key \"k") && strstr(e.msg, "first at byte 1)"),
              "dup msg: %s", e.msg);
        ms_json_opts o = {.allow_duplicate_keys = true};
        CHECK(ms_json_parse(s, k, &o, &d, &e) == 0, "duplicates allowed by option");
        CHECK(ms_json_int(ms_json_get(ms_json_root(d), "k1")) == n - 1, "first duplicate wins");
        ms_json_free(d);
        ms_free(s);
    }
    /* keys differing only after an embedded NUL are distinct */
    ms_json_doc *d = parse_ok("{\"a\\u0000b\":1, \"a\\u0000c\":2, \"a\":3}");
    CHECK(ms_json_int(ms_json_get(ms_json_root(d), "a")) == 3, "NUL key lookup");
    ms_json_free(d);
}

static void test_getters(void) {
    ms_json_doc *d = parse_ok("{\"i\": 7, \"big\": 5000000000, \"neg\": -1, \"f\": 1.5, "
                              "\"b\": true, "
                              "\"s\": \"str\", \"z\": \"a\\u0000\", \"n\": null}");
    const ms_json *r = ms_json_root(d);
    char err[128];
    int64_t i64;
    uint32_t u;
    double f;
    bool b;
    const char *s;
    CHECK(ms_json_get_i64(r, "i", &i64, err, sizeof err) == 0 && i64 == 7, "i64");
    CHECK(ms_json_get_u32(r, "i", &u, err, sizeof err) == 0 && u == 7, "u32");
    CHECK(ms_json_get_u32(r, "big", &u, err, sizeof err) == -MS_E_FORMAT &&
              strstr(err, "'big': 5000000000 out of range"),
          "u32 range: %s", err);
    CHECK(ms_json_get_u32(r, "neg", &u, err, sizeof err) == -MS_E_FORMAT, "u32 negative");
    CHECK(ms_json_get_i64(r, "f", &i64, err, sizeof err) == -MS_E_FORMAT &&
              strcmp(err, "'f': expected integer, found number") == 0,
          "i64 of float: %s", err);
    CHECK(ms_json_get_f64(r, "i", &f, err, sizeof err) == 0 && f == 7.0, "f64 of int");
    CHECK(ms_json_get_f64(r, "s", &f, err, sizeof err) == -MS_E_FORMAT &&
              strcmp(err, "'s': expected number, found string") == 0,
          "f64 of string: %s", err);
    CHECK(ms_json_get_bool(r, "b", &b, err, sizeof err) == 0 && b, "bool");
    CHECK(ms_json_get_bool(r, "n", &b, err, sizeof err) == -MS_E_FORMAT, "bool of null");
    CHECK(ms_json_get_str(r, "s", &s, err, sizeof err) == 0 && strcmp(s, "str") == 0, "str");
    CHECK(ms_json_get_str(r, "z", &s, err, sizeof err) == -MS_E_FORMAT, "str with NUL");
    CHECK(ms_json_get_str(r, "missing", &s, err, sizeof err) == -MS_E_NOT_FOUND &&
              strcmp(err, "'missing': missing") == 0,
          "missing: %s", err);
    CHECK(ms_json_get_i64(ms_json_get(r, "i"), "x", &i64, NULL, 0) == -MS_E_FORMAT,
          "getter on non-object, NULL err");
    ms_json_free(d);

    uint32_t line, col;
    ms_json_line_col("ab\ncd\n", 6, 4, &line, &col);
    CHECK(line == 2 && col == 2, "line_col %u:%u", line, col);
}

int main(void) {
    ms_alloc_stats s0, s1;
    ms_alloc_get_stats(&s0);
    test_values();
    test_numbers();
    test_strings();
    test_structure_errors();
    test_limits();
    test_objects();
    test_getters();
    ms_alloc_get_stats(&s1);
    CHECK(s1.n_live == s0.n_live, "leaked %llu blocks",
          (unsigned long long)(s1.n_live - s0.n_live));
    if (g_fail) {
        printf("%d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_json: ok\n");
    return 0;
}
