/* common/json.c — strict RFC 8259 parser into an arena-backed tree (see json.h).
 *
 * Recursive descent with an explicit depth limit (the recursion depth is the nesting depth, so the
 * limit bounds the C stack too). Children are collected on one growable scratch stack and copied
 * into the arena as one contiguous array when their container closes, so a container's items are
 * addressable by index. Objects with more than SMALL_OBJECT members also get a key-sorted index:
 * duplicate detection and lookups are O(n log n) / O(log n) even for hostile headers with millions
 * of keys.
 */
#include "common/json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/status.h"

#define SMALL_OBJECT 8u
#define DEFAULT_MAX_SIZE ((size_t)256 << 20)
#define DEFAULT_MAX_NODES ((uint64_t)4 << 20)

typedef struct jkey {
    const char *s;
    uint32_t len;
    uint32_t idx;   /* member index in document order */
    size_t offset;  /* byte offset of the key's opening quote */
} jkey;

struct ms_json {
    uint8_t type;  /* ms_json_type */
    bool b;
    bool is_int;
    uint32_t n;    /* items / members / string bytes */
    size_t offset;
    union {
        struct {
            double d;
            int64_t i;
        } num;
        const char *s;
        struct {
            ms_json *items;      /* [n]: array items, object values */
            const jkey *keys;    /* [n]: object keys in document order */
            const jkey *sorted;  /* [n] sorted by key, objects with n > SMALL_OBJECT; else NULL */
        } c;
    } u;
};

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

struct ms_json_doc {
    chunk *chunks;
    ms_json *root;
    uint64_t n_nodes;
};

typedef struct parser {
    const unsigned char *p;
    size_t len, pos;
    ms_json_opts o;
    ms_json_doc *doc;
    ms_json_error *err;
    int rc;             /* first error */
    ms_json *stk;       /* scratch: children of open containers */
    size_t stk_n, stk_cap;
    jkey *kstk;         /* scratch: keys of open objects */
    size_t kstk_n, kstk_cap;
} parser;

/* ------------------------------------------------------------------------------------------ */

static void *arena_alloc(ms_json_doc *d, size_t n) {
    n = (n + 15u) & ~(size_t)15u;
    if (n == 0) n = 16;
    chunk *c = d->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = c ? c->cap * 2 : (size_t)64 << 10;
        if (cap > ((size_t)16 << 20)) cap = (size_t)16 << 20;
        if (cap < n) cap = n;
        c = ms_malloc(sizeof(chunk) + cap);
        if (!c) return NULL;
        c->next = d->chunks;
        c->used = 0;
        c->cap = cap;
        d->chunks = c;
    }
    void *r = (char *)c->data + c->used;
    c->used += n;
    return r;
}

void ms_json_line_col(const char *buf, size_t len, size_t offset, uint32_t *line, uint32_t *col) {
    uint32_t l = 1, c = 1;
    if (offset > len) offset = len;
    for (size_t i = 0; i < offset; i++) {
        if (buf[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    if (line) *line = l;
    if (col) *col = c;
}

#if defined(__GNUC__)
static void fail(parser *P, size_t at, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#endif

static void fail(parser *P, size_t at, int rc, const char *fmt, ...) {
    if (P->rc) return;
    P->rc = rc;
    if (!P->err) return;
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ms_json_error *e = P->err;
    e->offset = at;
    ms_json_line_col((const char *)P->p, P->len, at, &e->line, &e->col);
    snprintf(e->msg, sizeof e->msg, "line %u, col %u (byte %zu): %s", e->line, e->col, at, what);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid (Unicode 3-7). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

bool ms_json_utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq(u + i, len - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

void ms_json_escape(const char *s, size_t len, char *out, size_t out_len) {
    if (!out || out_len == 0) return;
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        char tmp[8];
        size_t k = utf8_seq(u + i, len - i), tl;
        if (k == 1 && u[i] >= 0x20 && u[i] != 0x7F) {
            tmp[0] = (char)u[i];
            tl = 1;
        } else if (k > 1) {
            memcpy(tmp, u + i, k);
            tl = k;
        } else {
            k = 1;
            if (u[i] == '\n') tl = (size_t)snprintf(tmp, sizeof tmp, "\\n");
            else if (u[i] == '\t') tl = (size_t)snprintf(tmp, sizeof tmp, "\\t");
            else tl = (size_t)snprintf(tmp, sizeof tmp, "\\x%02X", u[i]);
        }
        if (o + tl + 4 > out_len) { /* keep room for "..." and NUL */
            if (o + 4 <= out_len) memcpy(out + o, "...", 3), o += 3;
            break;
        }
        memcpy(out + o, tmp, tl);
        o += tl;
        i += k;
    }
    out[o < out_len ? o : out_len - 1] = '\0';
}

/* ------------------------------------------------------------------------------------------ */

static void skip_ws(parser *P) {
    while (P->pos < P->len) {
        unsigned char c = P->p[P->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        P->pos++;
    }
}

static bool count_node(parser *P) {
    if (P->doc->n_nodes >= P->o.max_nodes) {
        fail(P, P->pos, -MS_E_FORMAT, "more than %llu values", (unsigned long long)P->o.max_nodes);
        return false;
    }
    P->doc->n_nodes++;
    return true;
}

/* Room for one more element in a growable array of *cap elements of elem bytes, n in use: returns
 * the (possibly moved) array, or NULL after reporting out-of-memory (the old array stays valid). */
static void *grow(parser *P, void *arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return arr;
    size_t c = *cap ? *cap * 2 : 64;
    void *a = ms_realloc(arr, c * elem);
    if (!a) {
        fail(P, P->pos, -MS_E_NOMEM, "out of memory");
        return NULL;
    }
    *cap = c;
    return a;
}

static bool push_node(parser *P, const ms_json *v) {
    ms_json *s = grow(P, P->stk, &P->stk_cap, P->stk_n, sizeof *s);
    if (!s) return false;
    P->stk = s;
    P->stk[P->stk_n++] = *v;
    return true;
}

static bool push_key(parser *P, const jkey *k) {
    jkey *s = grow(P, P->kstk, &P->kstk_cap, P->kstk_n, sizeof *s);
    if (!s) return false;
    P->kstk = s;
    P->kstk[P->kstk_n++] = *k;
    return true;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* \uXXXX at p[at] ('\\' at at); returns the code unit or -1. */
static long read_u4(parser *P, size_t at) {
    if (P->len - at < 6 || P->p[at] != '\\' || P->p[at + 1] != 'u') return -1;
    long v = 0;
    for (size_t i = 0; i < 4; i++) {
        int h = hexval(P->p[at + 2 + i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned long cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* P->p[P->pos] == '"'. Decodes into the arena; *out NUL-terminated, *out_len bytes. */
static bool parse_string(parser *P, const char **out, uint32_t *out_len) {
    size_t start = P->pos + 1, end = start;
    /* find the closing quote: decoded length <= raw length, so raw length sizes the buffer */
    while (end < P->len && P->p[end] != '"') end += (P->p[end] == '\\') ? 2 : 1;
    if (end >= P->len) {
        fail(P, P->pos, -MS_E_FORMAT, "unterminated string");
        return false;
    }
    if (end - start > UINT32_MAX) {
        fail(P, P->pos, -MS_E_FORMAT, "string longer than 4 GiB");
        return false;
    }
    char *buf = arena_alloc(P->doc, end - start + 1);
    if (!buf) {
        fail(P, P->pos, -MS_E_NOMEM, "out of memory");
        return false;
    }
    size_t o = 0, i = start;
    while (i < end) {
        unsigned char c = P->p[i];
        if (c == '\\') {
            unsigned char e = P->p[i + 1]; /* i + 1 < end: the scan above skipped pairs */
            switch (e) {
            case '"': buf[o++] = '"'; i += 2; continue;
            case '\\': buf[o++] = '\\'; i += 2; continue;
            case '/': buf[o++] = '/'; i += 2; continue;
            case 'b': buf[o++] = '\b'; i += 2; continue;
            case 'f': buf[o++] = '\f'; i += 2; continue;
            case 'n': buf[o++] = '\n'; i += 2; continue;
            case 'r': buf[o++] = '\r'; i += 2; continue;
            case 't': buf[o++] = '\t'; i += 2; continue;
            case 'u': break;
            default:
                fail(P, i, -MS_E_FORMAT, "invalid escape '\\%c'",
                     (e >= 0x20 && e < 0x7F) ? e : '?');
                return false;
            }
            long u = read_u4(P, i);
            if (u < 0 || i + 6 > end) {
                fail(P, i, -MS_E_FORMAT, "invalid \\u escape (need 4 hex digits)");
                return false;
            }
            unsigned long cp = (unsigned long)u;
            if (u >= 0xD800 && u <= 0xDBFF) {
                long lo = (i + 12 <= end) ? read_u4(P, i + 6) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(P, i, -MS_E_FORMAT, "high surrogate \\u%04lX not followed by a low one",
                         (unsigned long)u);
                    return false;
                }
                cp = 0x10000 + (((unsigned long)u - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
                i += 12;
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                fail(P, i, -MS_E_FORMAT, "lone low surrogate \\u%04lX", (unsigned long)u);
                return false;
            } else {
                i += 6;
            }
            o += put_utf8(buf + o, cp);
        } else if (c < 0x20) {
            fail(P, i, -MS_E_FORMAT, "control character 0x%02X in string (must be escaped)", c);
            return false;
        } else if (c < 0x80) {
            buf[o++] = (char)c;
            i++;
        } else {
            size_t k = utf8_seq(P->p + i, end - i);
            if (!k) {
                fail(P, i, -MS_E_FORMAT, "invalid UTF-8 byte 0x%02X in string", c);
                return false;
            }
            memcpy(buf + o, P->p + i, k);
            o += k;
            i += k;
        }
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = (uint32_t)o;
    P->pos = end + 1;
    return true;
}

static bool parse_number(parser *P, ms_json *v) {
    size_t s = P->pos, i = s;
    const unsigned char *p = P->p;
    bool neg = false, integral = true;
    if (i < P->len && p[i] == '-') {
        neg = true;
        i++;
    }
    if (i >= P->len || p[i] < '0' || p[i] > '9') {
        fail(P, i, -MS_E_FORMAT, "invalid number (expected a digit)");
        return false;
    }
    uint64_t mag = 0;
    bool mag_ovf = false;
    if (p[i] == '0') {
        i++;
        if (i < P->len && p[i] >= '0' && p[i] <= '9') {
            fail(P, s, -MS_E_FORMAT, "invalid number (leading zero)");
            return false;
        }
    } else {
        while (i < P->len && p[i] >= '0' && p[i] <= '9') {
            unsigned dg = (unsigned)(p[i] - '0');
            if (mag > (UINT64_MAX - dg) / 10) mag_ovf = true;
            else mag = mag * 10 + dg;
            i++;
        }
    }
    if (i < P->len && p[i] == '.') {
        integral = false;
        i++;
        if (i >= P->len || p[i] < '0' || p[i] > '9') {
            fail(P, i, -MS_E_FORMAT, "invalid number (digit expected after '.')");
            return false;
        }
        while (i < P->len && p[i] >= '0' && p[i] <= '9') i++;
    }
    if (i < P->len && (p[i] == 'e' || p[i] == 'E')) {
        integral = false;
        i++;
        if (i < P->len && (p[i] == '+' || p[i] == '-')) i++;
        if (i >= P->len || p[i] < '0' || p[i] > '9') {
            fail(P, i, -MS_E_FORMAT, "invalid number (digit expected in exponent)");
            return false;
        }
        while (i < P->len && p[i] >= '0' && p[i] <= '9') i++;
    }
    /* strtod needs a NUL-terminated copy; the input need not be terminated. Numbers longer than
     * the stack buffer are rare enough to take a heap copy. */
    size_t tl = i - s;
    char sb[128], *tok = sb;
    if (tl >= sizeof sb) {
        tok = ms_malloc(tl + 1);
        if (!tok) {
            fail(P, s, -MS_E_NOMEM, "out of memory");
            return false;
        }
    }
    memcpy(tok, p + s, tl);
    tok[tl] = '\0';
    double d = strtod(tok, NULL);
    if (tok != sb) ms_free(tok);
    if (!isfinite(d)) {
        fail(P, s, -MS_E_FORMAT, "number out of double range");
        return false;
    }
    v->type = MS_JSON_NUMBER;
    v->u.num.d = d;
    v->u.num.i = 0;
    v->is_int = false;
    if (integral && !mag_ovf) {
        if (!neg && mag <= (uint64_t)INT64_MAX) {
            v->is_int = true;
            v->u.num.i = (int64_t)mag;
        } else if (neg && mag <= (uint64_t)INT64_MAX + 1u) {
            v->is_int = true;
            v->u.num.i = (mag == (uint64_t)INT64_MAX + 1u) ? INT64_MIN : -(int64_t)mag;
        }
    }
    P->pos = i;
    return true;
}

static int key_cmp(const void *a, const void *b) {
    const jkey *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx); /* stable: earlier member first */
}

static bool dup_key(parser *P, const jkey *first, const jkey *again) {
    char k[80];
    ms_json_escape(again->s, again->len, k, sizeof k);
    fail(P, again->offset, -MS_E_FORMAT, "duplicate key \"%s\" (first at byte %zu)", k,
         first->offset);
    return false;
}

static bool parse_value(parser *P, uint32_t depth, ms_json *v);

static bool finish_container(parser *P, ms_json *v, size_t base, size_t kbase) {
    size_t n = P->stk_n - base;
    if (n > UINT32_MAX) {
        fail(P, v->offset, -MS_E_FORMAT, "container with more than 4 Gi members");
        return false;
    }
    v->n = (uint32_t)n;
    v->u.c.items = NULL;
    v->u.c.keys = NULL;
    v->u.c.sorted = NULL;
    if (n) {
        v->u.c.items = arena_alloc(P->doc, n * sizeof(ms_json));
        if (!v->u.c.items) goto nomem;
        memcpy(v->u.c.items, P->stk + base, n * sizeof(ms_json));
    }
    P->stk_n = base;
    if (v->type != MS_JSON_OBJECT || n == 0) return true;

    jkey *keys = arena_alloc(P->doc, n * sizeof(jkey));
    if (!keys) goto nomem;
    memcpy(keys, P->kstk + kbase, n * sizeof(jkey));
    P->kstk_n = kbase;
    v->u.c.keys = keys;
    if (n <= SMALL_OBJECT) {
        if (P->o.allow_duplicate_keys) return true;
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (keys[i].len == keys[j].len && memcmp(keys[i].s, keys[j].s, keys[i].len) == 0)
                    return dup_key(P, &keys[j], &keys[i]);
        return true;
    }
    jkey *sorted = arena_alloc(P->doc, n * sizeof(jkey));
    if (!sorted) goto nomem;
    memcpy(sorted, keys, n * sizeof(jkey));
    qsort(sorted, n, sizeof(jkey), key_cmp);
    if (!P->o.allow_duplicate_keys) {
        /* report the duplicate that appears first in the document */
        const jkey *best_first = NULL, *best_again = NULL;
        for (size_t i = 1; i < n; i++) {
            if (sorted[i].len == sorted[i - 1].len &&
                memcmp(sorted[i].s, sorted[i - 1].s, sorted[i].len) == 0 &&
                (!best_again || sorted[i].offset < best_again->offset)) {
                best_again = &sorted[i];
                best_first = &sorted[i - 1];
            }
        }
        if (best_again) return dup_key(P, best_first, best_again);
    }
    v->u.c.sorted = sorted;
    return true;
nomem:
    fail(P, v->offset, -MS_E_NOMEM, "out of memory");
    return false;
}

static bool parse_array(parser *P, uint32_t depth, ms_json *v) {
    size_t base = P->stk_n;
    v->type = MS_JSON_ARRAY;
    P->pos++; /* '[' */
    skip_ws(P);
    if (P->pos < P->len && P->p[P->pos] == ']') {
        P->pos++;
        return finish_container(P, v, base, P->kstk_n);
    }
    for (;;) {
        ms_json item;
        if (!parse_value(P, depth + 1, &item)) return false;
        if (!push_node(P, &item)) return false;
        skip_ws(P);
        if (P->pos >= P->len) {
            fail(P, P->pos, -MS_E_FORMAT, "unexpected end of input in array (opened at byte %zu)",
                 v->offset);
            return false;
        }
        unsigned char c = P->p[P->pos];
        if (c == ',') {
            P->pos++;
            continue;
        }
        if (c == ']') {
            P->pos++;
            return finish_container(P, v, base, P->kstk_n);
        }
        fail(P, P->pos, -MS_E_FORMAT, "expected ',' or ']' in array");
        return false;
    }
}

static bool parse_object(parser *P, uint32_t depth, ms_json *v) {
    size_t base = P->stk_n, kbase = P->kstk_n;
    v->type = MS_JSON_OBJECT;
    P->pos++; /* '{' */
    skip_ws(P);
    if (P->pos < P->len && P->p[P->pos] == '}') {
        P->pos++;
        return finish_container(P, v, base, kbase);
    }
    for (uint32_t idx = 0;; idx++) {
        skip_ws(P);
        if (P->pos >= P->len || P->p[P->pos] != '"') {
            fail(P, P->pos, -MS_E_FORMAT,
                 P->pos >= P->len ? "unexpected end of input, expected a key"
                                  : "expected a string key");
            return false;
        }
        jkey k = {.offset = P->pos, .idx = idx};
        if (!parse_string(P, &k.s, &k.len)) return false;
        if (!push_key(P, &k)) return false;
        skip_ws(P);
        if (P->pos >= P->len || P->p[P->pos] != ':') {
            fail(P, P->pos, -MS_E_FORMAT, "expected ':' after key");
            return false;
        }
        P->pos++;
        ms_json item;
        if (!parse_value(P, depth + 1, &item)) return false;
        if (!push_node(P, &item)) return false;
        skip_ws(P);
        if (P->pos >= P->len) {
            fail(P, P->pos, -MS_E_FORMAT, "unexpected end of input in object (opened at byte %zu)",
                 v->offset);
            return false;
        }
        unsigned char c = P->p[P->pos];
        if (c == ',') {
            P->pos++;
            continue;
        }
        if (c == '}') {
            P->pos++;
            return finish_container(P, v, base, kbase);
        }
        fail(P, P->pos, -MS_E_FORMAT, "expected ',' or '}' in object");
        return false;
    }
}

static bool literal(parser *P, const char *word, size_t n) {
    if (P->len - P->pos < n || memcmp(P->p + P->pos, word, n) != 0) {
        fail(P, P->pos, -MS_E_FORMAT, "invalid literal (expected '%s')", word);
        return false;
    }
    P->pos += n;
    return true;
}

static bool parse_value(parser *P, uint32_t depth, ms_json *v) {
    skip_ws(P);
    memset(v, 0, sizeof *v);
    v->offset = P->pos;
    if (P->pos >= P->len) {
        fail(P, P->pos, -MS_E_FORMAT, "unexpected end of input, expected a value");
        return false;
    }
    if (!count_node(P)) return false;
    unsigned char c = P->p[P->pos];
    switch (c) {
    case '{':
    case '[':
        if (depth >= P->o.max_depth) {
            fail(P, P->pos, -MS_E_FORMAT, "nesting deeper than %u", P->o.max_depth);
            return false;
        }
        return c == '{' ? parse_object(P, depth, v) : parse_array(P, depth, v);
    case '"':
        v->type = MS_JSON_STRING;
        return parse_string(P, &v->u.s, &v->n);
    case 't':
        v->type = MS_JSON_BOOL;
        v->b = true;
        return literal(P, "true", 4);
    case 'f':
        v->type = MS_JSON_BOOL;
        return literal(P, "false", 5);
    case 'n':
        v->type = MS_JSON_NULL;
        return literal(P, "null", 4);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(P, v);
        if (c == 0xEF && P->pos == 0) {
            fail(P, 0, -MS_E_FORMAT, "byte-order mark is not allowed");
            return false;
        }
        if (c >= 0x20 && c < 0x7F) fail(P, P->pos, -MS_E_FORMAT, "unexpected character '%c'", c);
        else fail(P, P->pos, -MS_E_FORMAT, "unexpected byte 0x%02X", c);
        return false;
    }
}

int ms_json_parse(const char *buf, size_t len, const ms_json_opts *opts, ms_json_doc **out,
                  ms_json_error *err) {
    parser P;
    memset(&P, 0, sizeof P);
    if (opts) P.o = *opts;
    if (!P.o.max_depth) P.o.max_depth = MS_JSON_DEFAULT_MAX_DEPTH;
    if (!P.o.max_size) P.o.max_size = DEFAULT_MAX_SIZE;
    if (!P.o.max_nodes) P.o.max_nodes = DEFAULT_MAX_NODES;
    P.p = (const unsigned char *)buf;
    P.len = len;
    P.err = err;
    if (err) memset(err, 0, sizeof *err);
    if (out) *out = NULL;
    if (!out || (!buf && len)) {
        if (err) snprintf(err->msg, sizeof err->msg, "invalid argument");
        return -MS_E_INVALID_ARG;
    }
    if (len > P.o.max_size) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "input of %zu bytes exceeds the limit of %zu", len,
                     P.o.max_size);
        return -MS_E_FORMAT;
    }
    P.doc = ms_calloc(1, sizeof *P.doc);
    if (!P.doc) return -MS_E_NOMEM;
    ms_json *root = arena_alloc(P.doc, sizeof *root);
    if (!root) fail(&P, 0, -MS_E_NOMEM, "out of memory");
    else if (parse_value(&P, 0, root)) {
        skip_ws(&P);
        if (P.pos < P.len) fail(&P, P.pos, -MS_E_FORMAT, "unexpected data after the JSON value");
    }
    ms_free(P.stk);
    ms_free(P.kstk);
    if (P.rc) {
        ms_json_free(P.doc);
        return P.rc;
    }
    P.doc->root = root;
    *out = P.doc;
    return 0;
}

void ms_json_free(ms_json_doc *doc) {
    if (!doc) return;
    for (chunk *c = doc->chunks, *n; c; c = n) {
        n = c->next;
        ms_free(c);
    }
    ms_free(doc);
}

const ms_json *ms_json_root(const ms_json_doc *doc) { return doc ? doc->root : NULL; }
uint64_t ms_json_node_count(const ms_json_doc *doc) { return doc ? doc->n_nodes : 0; }

/* ------------------------------------------------------------------------------------------ */

ms_json_type ms_json_type_of(const ms_json *v) { return v ? (ms_json_type)v->type : MS_JSON_NULL; }

const char *ms_json_type_name(ms_json_type t) {
    switch (t) {
    case MS_JSON_NULL: return "null";
    case MS_JSON_BOOL: return "boolean";
    case MS_JSON_NUMBER: return "number";
    case MS_JSON_STRING: return "string";
    case MS_JSON_ARRAY: return "array";
    case MS_JSON_OBJECT: return "object";
    }
    return "?";
}

const char *ms_json_kind(const ms_json *v) {
    if (!v) return "absent";
    if (v->type == MS_JSON_NUMBER && v->is_int) return "integer";
    return ms_json_type_name((ms_json_type)v->type);
}

size_t ms_json_offset(const ms_json *v) { return v ? v->offset : 0; }
uint32_t ms_json_len(const ms_json *v) {
    if (!v) return 0;
    return (v->type == MS_JSON_ARRAY || v->type == MS_JSON_OBJECT || v->type == MS_JSON_STRING)
               ? v->n
               : 0;
}
bool ms_json_is_int(const ms_json *v) { return v && v->type == MS_JSON_NUMBER && v->is_int; }
bool ms_json_bool(const ms_json *v) { return v && v->type == MS_JSON_BOOL && v->b; }
double ms_json_num(const ms_json *v) { return v && v->type == MS_JSON_NUMBER ? v->u.num.d : 0.0; }
int64_t ms_json_int(const ms_json *v) { return ms_json_is_int(v) ? v->u.num.i : 0; }

const char *ms_json_str(const ms_json *v, size_t *len) {
    if (!v || v->type != MS_JSON_STRING) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = v->n;
    return v->u.s;
}

const ms_json *ms_json_at(const ms_json *arr, uint32_t i) {
    if (!arr || arr->type != MS_JSON_ARRAY || i >= arr->n) return NULL;
    return &arr->u.c.items[i];
}

const ms_json *ms_json_get(const ms_json *obj, const char *key) {
    if (!obj || obj->type != MS_JSON_OBJECT || !key || obj->n == 0) return NULL;
    size_t kl = strlen(key);
    if (!obj->u.c.sorted) {
        for (uint32_t i = 0; i < obj->n; i++)
            if (obj->u.c.keys[i].len == kl && memcmp(obj->u.c.keys[i].s, key, kl) == 0)
                return &obj->u.c.items[i];
        return NULL;
    }
    /* lower bound over the sorted keys: the first of equal keys is the earliest member */
    jkey probe = {.s = key, .len = (uint32_t)(kl > UINT32_MAX ? UINT32_MAX : kl), .idx = 0};
    size_t lo = 0, hi = obj->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&obj->u.c.sorted[mid], &probe) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < obj->n && obj->u.c.sorted[lo].len == kl &&
        memcmp(obj->u.c.sorted[lo].s, key, kl) == 0)
        return &obj->u.c.items[obj->u.c.sorted[lo].idx];
    return NULL;
}

const char *ms_json_key_at(const ms_json *obj, uint32_t i, size_t *len) {
    if (!obj || obj->type != MS_JSON_OBJECT || i >= obj->n) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = obj->u.c.keys[i].len;
    return obj->u.c.keys[i].s;
}

const ms_json *ms_json_value_at(const ms_json *obj, uint32_t i) {
    if (!obj || obj->type != MS_JSON_OBJECT || i >= obj->n) return NULL;
    return &obj->u.c.items[i];
}

/* ------------------------------------------------------------------------------------------ */

static int getter_prologue(const ms_json *obj, const char *key, const ms_json **v, char *err,
                           size_t err_len) {
    if (!obj || obj->type != MS_JSON_OBJECT) {
        if (err && err_len) snprintf(err, err_len, "'%s': parent is not an object", key);
        return -MS_E_FORMAT;
    }
    *v = ms_json_get(obj, key);
    if (!*v) {
        if (err && err_len) snprintf(err, err_len, "'%s': missing", key);
        return -MS_E_NOT_FOUND;
    }
    return 0;
}

static int wrong_type(const char *key, const char *want, const ms_json *v, char *err,
                      size_t err_len) {
    if (err && err_len) snprintf(err, err_len, "'%s': expected %s, found %s", key, want,
                                 ms_json_kind(v));
    return -MS_E_FORMAT;
}

int ms_json_get_i64(const ms_json *obj, const char *key, int64_t *out, char *err, size_t err_len) {
    const ms_json *v;
    int rc = getter_prologue(obj, key, &v, err, err_len);
    if (rc) return rc;
    if (!ms_json_is_int(v)) return wrong_type(key, "integer", v, err, err_len);
    *out = v->u.num.i;
    return 0;
}

int ms_json_get_u32(const ms_json *obj, const char *key, uint32_t *out, char *err, size_t err_len) {
    int64_t x;
    int rc = ms_json_get_i64(obj, key, &x, err, err_len);
    if (rc) return rc;
    if (x < 0 || x > (int64_t)UINT32_MAX) {
        if (err && err_len)
            snprintf(err, err_len, "'%s': %lld out of range 0..4294967295", key, (long long)x);
        return -MS_E_FORMAT;
    }
    *out = (uint32_t)x;
    return 0;
}

int ms_json_get_f64(const ms_json *obj, const char *key, double *out, char *err, size_t err_len) {
    const ms_json *v;
    int rc = getter_prologue(obj, key, &v, err, err_len);
    if (rc) return rc;
    if (v->type != MS_JSON_NUMBER) return wrong_type(key, "number", v, err, err_len);
    *out = v->u.num.d;
    return 0;
}

int ms_json_get_bool(const ms_json *obj, const char *key, bool *out, char *err, size_t err_len) {
    const ms_json *v;
    int rc = getter_prologue(obj, key, &v, err, err_len);
    if (rc) return rc;
    if (v->type != MS_JSON_BOOL) return wrong_type(key, "boolean", v, err, err_len);
    *out = v->b;
    return 0;
}

int ms_json_get_str(const ms_json *obj, const char *key, const char **out, char *err,
                    size_t err_len) {
    const ms_json *v;
    int rc = getter_prologue(obj, key, &v, err, err_len);
    if (rc) return rc;
    if (v->type != MS_JSON_STRING) return wrong_type(key, "string", v, err, err_len);
    if (strlen(v->u.s) != v->n) {
        if (err && err_len) snprintf(err, err_len, "'%s': string contains a NUL character", key);
        return -MS_E_FORMAT;
    }
    *out = v->u.s;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* writer                                                                                       */

void ms_json_write_string(FILE *f, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        size_t k = utf8_seq(u + i, len - i);
        if (k == 0) { /* not UTF-8: the replacement character keeps the output valid */
            fputs("\\ufffd", f);
            i++;
        } else if (k > 1) {
            fwrite(u + i, 1, k, f);
            i += k;
        } else {
            if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
            else if (c == '\n') fputs("\\n", f);
            else if (c == '\t') fputs("\\t", f);
            else if (c == '\r') fputs("\\r", f);
            else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
            i++;
        }
    }
    fputc('"', f);
}

void ms_json_writer_init(ms_json_writer *w, FILE *f, bool spaced) {
    memset(w, 0, sizeof *w);
    w->f = f;
    w->spaced = spaced;
    w->first[0] = true;
}

static void w_key(ms_json_writer *w, const char *key) {
    if (!w->first[w->depth]) fputs(w->spaced ? ", " : ",", w->f);
    w->first[w->depth] = false;
    if (key) {
        ms_json_write_string(w->f, key, strlen(key));
        fputs(w->spaced ? ": " : ":", w->f);
    }
}

void ms_json_write_begin(ms_json_writer *w, const char *key, char bracket) {
    MS_ASSERT(w->depth + 1 < MS_JSON_WRITER_DEPTH && (bracket == '{' || bracket == '['));
    w_key(w, key);
    fputc(bracket, w->f);
    w->first[++w->depth] = true;
}

void ms_json_write_end(ms_json_writer *w, char bracket) {
    MS_ASSERT(w->depth > 0 && (bracket == '}' || bracket == ']'));
    fputc(bracket, w->f);
    w->depth--;
}

void ms_json_write_str(ms_json_writer *w, const char *key, const char *s) {
    w_key(w, key);
    if (s) ms_json_write_string(w->f, s, strlen(s));
    else fputs("null", w->f);
}

void ms_json_write_u64(ms_json_writer *w, const char *key, uint64_t v) {
    w_key(w, key);
    fprintf(w->f, "%llu", (unsigned long long)v);
}

void ms_json_write_i64(ms_json_writer *w, const char *key, int64_t v) {
    w_key(w, key);
    fprintf(w->f, "%lld", (long long)v);
}

void ms_json_write_f64(ms_json_writer *w, const char *key, double v, int digits) {
    w_key(w, key);
    if (isfinite(v)) {
        fprintf(w->f, "%.*g", digits, v);
    } else {
        fputs("null", w->f);
        w->nonfinite++;
    }
}

void ms_json_write_bool(ms_json_writer *w, const char *key, bool v) {
    w_key(w, key);
    fputs(v ? "true" : "false", w->f);
}

void ms_json_write_null(ms_json_writer *w, const char *key) {
    w_key(w, key);
    fputs("null", w->f);
}
