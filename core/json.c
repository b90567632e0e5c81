/* core/json: iterative strict JSON parser into a flat node array (see json.h). */
#include "core/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_DEFAULT_MAX_BYTES (128ll << 20)
#define JSON_DEFAULT_MAX_DEPTH 64
#define JSON_DEFAULT_MAX_NODES (16ll << 20)

typedef struct JsonFrame {
    int64_t node;
    int64_t last_child; /* -1 before the first child */
} JsonFrame;

typedef struct JsonParser {
    const unsigned char *s;
    int64_t len, pos;
    JsonDoc *doc;
    int64_t cap;       /* allocated nodes */
    int64_t pool_used; /* bytes of doc->pool in use; the pool holds len + 1 bytes */
    JsonLimits lim;
    JsonFrame *stack;
    int32_t depth;     /* frames in use */
    int64_t key, key_len; /* pending object key for the next value, -1 when none */
} JsonParser;

static Status json_fail(const JsonParser *p, int64_t at, const char *what) {
    return addc_error_set(ADDC_ERR_FORMAT, "json: %s at byte %lld", what, (long long)at);
}

static void json_skip_ws(JsonParser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Appends a node of `type` at input offset `at`, linked into the current container. */
static Status json_node_new(JsonParser *p, JsonType type, int64_t at, int64_t *out) {
    JsonDoc *d = p->doc;
    if (d->n >= p->lim.max_nodes) return json_fail(p, at, "too many values (node limit)");
    if (d->n == p->cap) {
        int64_t cap = p->cap ? p->cap * 2 : 64;
        if (cap > p->lim.max_nodes) cap = p->lim.max_nodes;
        JsonNode *nn = realloc(d->nodes, (size_t)cap * sizeof *nn);
        if (!nn) return addc_error_set(ADDC_ERR_NOMEM, "json: out of memory for %lld nodes", (long long)cap);
        d->nodes = nn;
        p->cap = cap;
    }
    int64_t i = d->n++;
    JsonNode *n = &d->nodes[i];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->next = -1;
    n->key = p->key;
    n->key_len = p->key_len;
    n->str = -1;
    n->pos = at;
    n->depth = p->depth;
    p->key = p->key_len = -1;
    if (p->depth > 0) {
        JsonFrame *f = &p->stack[p->depth - 1];
        if (f->last_child >= 0) d->nodes[f->last_child].next = i;
        f->last_child = i;
        d->nodes[f->node].count++;
    }
    *out = i;
    return ADDC_OK;
}

static int json_hex4(const unsigned char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static int json_put_utf8(char *o, uint32_t cp) {
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

/* Length of the valid UTF-8 sequence starting at s[0] (a byte >= 0x80), 0 if invalid. */
static int json_utf8_len(const unsigned char *s, int64_t avail) {
    unsigned char c = s[0];
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (avail < n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

/* Parses the string whose opening quote is at p->pos into the pool. */
static Status json_string_parse(JsonParser *p, int64_t *off, int64_t *len) {
    int64_t start = p->pos++;
    char *o = p->doc->pool + p->pool_used;
    int64_t w = 0;
    for (;;) {
        if (p->pos >= p->len) return json_fail(p, start, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) return json_fail(p, p->pos, "raw control character in string");
        if (c == '\\') {
            if (p->pos + 1 >= p->len) return json_fail(p, start, "unterminated string");
            unsigned char e = p->s[p->pos + 1];
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                o[w++] = map[simple - "\"\\/bfnrt"];
                p->pos += 2;
                continue;
            }
            if (e != 'u') return json_fail(p, p->pos, "invalid escape in string");
            uint32_t cp;
            if (p->pos + 6 > p->len || !json_hex4(p->s + p->pos + 2, &cp))
                return json_fail(p, p->pos, "invalid \\u escape");
            p->pos += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (p->pos + 6 <= p->len && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u' &&
                    json_hex4(p->s + p->pos + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p->pos += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            w += json_put_utf8(o + w, cp);
            continue;
        }
        if (c < 0x80) {
            o[w++] = (char)c;
            p->pos++;
            continue;
        }
        int n = json_utf8_len(p->s + p->pos, p->len - p->pos);
        if (!n) return json_fail(p, p->pos, "invalid UTF-8 in string");
        memcpy(o + w, p->s + p->pos, (size_t)n);
        w += n;
        p->pos += n;
    }
    o[w] = 0;
    *off = p->pool_used;
    *len = w;
    p->pool_used += w + 1;
    return ADDC_OK;
}

static Status json_number_parse(JsonParser *p, JsonNode *n) {
    int64_t start = p->pos, i = p->pos;
    const unsigned char *s = p->s;
    bool is_int = true;
    if (i < p->len && s[i] == '-') i++;
    if (i >= p->len || !(s[i] >= '0' && s[i] <= '9')) return json_fail(p, start, "invalid number");
    if (s[i] == '0') {
        i++;
        if (i < p->len && s[i] >= '0' && s[i] <= '9') return json_fail(p, start, "number with a leading zero");
    } else {
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->len && s[i] == '.') {
        is_int = false;
        i++;
        if (i >= p->len || !(s[i] >= '0' && s[i] <= '9')) return json_fail(p, start, "invalid number (digit expected after '.')");
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        is_int = false;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !(s[i] >= '0' && s[i] <= '9')) return json_fail(p, start, "invalid number (digit expected in exponent)");
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    int64_t nlen = i - start;
    char small[64];
    char *buf = nlen < (int64_t)sizeof small ? small : malloc((size_t)nlen + 1);
    if (!buf) return addc_error_set(ADDC_ERR_NOMEM, "json: out of memory for a number");
    memcpy(buf, s + start, (size_t)nlen);
    buf[nlen] = 0;
    double v = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (!isfinite(v)) return json_fail(p, start, "number out of range");
    n->num = v;
    if (is_int) {
        /* exact int64 when it fits: accumulate negatively to reach INT64_MIN */
        int64_t j = start, acc = 0;
        bool neg = s[j] == '-', fits = true;
        if (neg) j++;
        for (; j < i; j++) {
            int d = s[j] - '0';
            if (acc < (INT64_MIN + d) / 10) {
                fits = false;
                break;
            }
            acc = acc * 10 - d;
        }
        if (fits && !neg && acc == INT64_MIN) fits = false;
        if (fits) {
            n->is_int = true;
            n->ival = neg ? acc : -acc;
        }
    }
    p->pos = i;
    return ADDC_OK;
}

static int json_literal(JsonParser *p, const char *lit) {
    size_t n = strlen(lit);
    if (p->pos + (int64_t)n > p->len || memcmp(p->s + p->pos, lit, n) != 0) return 0;
    p->pos += (int64_t)n;
    return 1;
}

/* Reads `"key" :` inside an object (p->pos at the key's quote). */
static Status json_member_key(JsonParser *p) {
    if (p->pos >= p->len || p->s[p->pos] != '"') return json_fail(p, p->pos, "expected a string key in object");
    TRY(json_string_parse(p, &p->key, &p->key_len));
    json_skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':') return json_fail(p, p->pos, "expected ':' after object key");
    p->pos++;
    return ADDC_OK;
}

static Status json_run(JsonParser *p) {
    JsonDoc *d = p->doc;
    for (;;) {
        /* a value is expected at p->pos */
        json_skip_ws(p);
        if (p->pos >= p->len) return json_fail(p, p->pos, "unexpected end of input, expected a value");
        int64_t at = p->pos, idx;
        unsigned char c = p->s[at];
        bool opened = false;
        if (c == '{' || c == '[') {
            if (p->depth >= p->lim.max_depth) return json_fail(p, at, "nesting too deep (depth limit)");
            TRY(json_node_new(p, c == '{' ? JSON_OBJECT : JSON_ARRAY, at, &idx));
            p->stack[p->depth++] = (JsonFrame){idx, -1};
            p->pos++;
            json_skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == (c == '{' ? '}' : ']')) {
                p->pos++;
                p->depth--;
            } else {
                if (c == '{') TRY(json_member_key(p));
                opened = true;
            }
        } else if (c == '"') {
            TRY(json_node_new(p, JSON_STRING, at, &idx));
            int64_t off, len;
            TRY(json_string_parse(p, &off, &len));
            d->nodes[idx].str = off;
            d->nodes[idx].str_len = len;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            TRY(json_node_new(p, JSON_NUMBER, at, &idx));
            TRY(json_number_parse(p, &d->nodes[idx]));
        } else if (json_literal(p, "true")) {
            TRY(json_node_new(p, JSON_TRUE, at, &idx));
        } else if (json_literal(p, "false")) {
            TRY(json_node_new(p, JSON_FALSE, at, &idx));
        } else if (json_literal(p, "null")) {
            TRY(json_node_new(p, JSON_NULL, at, &idx));
        } else {
            return json_fail(p, at, "expected a value");
        }
        if (opened) continue;
        /* after a complete value: close containers or move to the next element */
        for (;;) {
            if (p->depth == 0) {
                json_skip_ws(p);
                if (p->pos != p->len) return json_fail(p, p->pos, "unexpected data after the document");
                return ADDC_OK;
            }
            JsonFrame *f = &p->stack[p->depth - 1];
            bool obj = d->nodes[f->node].type == JSON_OBJECT;
            json_skip_ws(p);
            if (p->pos >= p->len) return json_fail(p, p->pos, obj ? "unterminated object" : "unterminated array");
            unsigned char e = p->s[p->pos];
            if (e == ',') {
                p->pos++;
                if (obj) {
                    json_skip_ws(p);
                    TRY(json_member_key(p));
                }
                break;
            }
            if (e == (obj ? '}' : ']')) {
                p->pos++;
                p->depth--;
                continue;
            }
            return json_fail(p, p->pos, obj ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
        }
    }
}

Status json_parse(const char *text, int64_t len, const JsonLimits *lim, JsonDoc *doc) {
    memset(doc, 0, sizeof *doc);
    JsonParser p = {0};
    p.lim.max_bytes = lim && lim->max_bytes > 0 ? lim->max_bytes : JSON_DEFAULT_MAX_BYTES;
    p.lim.max_depth = lim && lim->max_depth > 0 ? lim->max_depth : JSON_DEFAULT_MAX_DEPTH;
    p.lim.max_nodes = lim && lim->max_nodes > 0 ? lim->max_nodes : JSON_DEFAULT_MAX_NODES;
    if (len < 0 || (len > 0 && !text)) return addc_error_set(ADDC_ERR_INVALID, "json: no input");
    if (len > p.lim.max_bytes)
        return addc_error_set(ADDC_ERR_FORMAT, "json: document of %lld bytes exceeds the %lld-byte limit",
                              (long long)len, (long long)p.lim.max_bytes);
    p.s = (const unsigned char *)text;
    p.len = len;
    p.doc = doc;
    p.key = p.key_len = -1;
    doc->pool = malloc((size_t)len + 1);
    p.stack = malloc(sizeof *p.stack * (size_t)p.lim.max_depth);
    Status st;
    if (!doc->pool || !p.stack) st = addc_error_set(ADDC_ERR_NOMEM, "json: out of memory");
    else st = json_run(&p);
    free(p.stack);
    if (st != ADDC_OK) {
        json_free(doc);
        return st;
    }
    return ADDC_OK;
}

void json_free(JsonDoc *doc) {
    free(doc->nodes);
    free(doc->pool);
    memset(doc, 0, sizeof *doc);
}

const JsonNode *json_root(const JsonDoc *doc) { return doc->n > 0 ? &doc->nodes[0] : NULL; }

const JsonNode *json_child(const JsonDoc *doc, const JsonNode *node) {
    if (!node || (node->type != JSON_ARRAY && node->type != JSON_OBJECT) || node->count == 0) return NULL;
    return node + 1;
}

const JsonNode *json_next(const JsonDoc *doc, const JsonNode *node) {
    return node && node->next >= 0 ? &doc->nodes[node->next] : NULL;
}

const JsonNode *json_get(const JsonDoc *doc, const JsonNode *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    const JsonNode *found = NULL;
    for (const JsonNode *c = json_child(doc, obj); c; c = json_next(doc, c))
        if ((size_t)c->key_len == kl && memcmp(doc->pool + c->key, key, kl) == 0) found = c;
    return found;
}

const JsonNode *json_at(const JsonDoc *doc, const JsonNode *arr, int64_t i) {
    if (!arr || arr->type != JSON_ARRAY || i < 0 || i >= arr->count) return NULL;
    const JsonNode *c = json_child(doc, arr);
    while (i-- > 0) c = json_next(doc, c);
    return c;
}

const char *json_string(const JsonDoc *doc, const JsonNode *node, int64_t *len) {
    if (!node || node->type != JSON_STRING) return NULL;
    if (len) *len = node->str_len;
    return doc->pool + node->str;
}

const char *json_key(const JsonDoc *doc, const JsonNode *node) {
    return node && node->key >= 0 ? doc->pool + node->key : NULL;
}

bool json_number(const JsonNode *node, double *out) {
    if (!node || node->type != JSON_NUMBER) return false;
    *out = node->num;
    return true;
}

bool json_int(const JsonNode *node, int64_t *out) {
    if (!node || node->type != JSON_NUMBER || !node->is_int) return false;
    *out = node->ival;
    return true;
}

const char *json_type_name(JsonType t) {
    static const char *const names[] = {"null", "false", "true", "number", "string", "array", "object"};
    return (t >= 0 && t <= JSON_OBJECT) ? names[t] : "unknown";
}

bool json_utf8_valid(const char *s, int64_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (int64_t i = 0; i < len;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int n = json_utf8_len(u + i, len - i);
        if (!n) return false;
        i += n;
    }
    return true;
}
