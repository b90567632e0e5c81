/* nn/tokenizer: the CLIP BPE tokenizer (see tokenizer.h). Text is cleaned as a code-point array
 * (the Python libraries work on str), pre-tokenised with the CLIP regex written out as a scanner,
 * and each piece's bytes are merged by rank through a hash table of (left id, right id) pairs.
 * The Unicode data comes from nn/tokenizer_tables.c (generated from the Python libraries). */
#include "nn/tokenizer.h"

#include <archive.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/tokenizer_tables.h"

#define CLIP_N_MERGES 48894 /* 49152 - 256 - 2: what open_clip reads of the file */
#define UNESCAPE_ROUNDS_MAX 16

/* ---- growable code-point buffers ---- */

typedef struct CpBuf {
    uint32_t *d;
    int64_t n, cap;
} CpBuf;

static bool cp_push(CpBuf *b, uint32_t c) {
    if (b->n == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 64;
        uint32_t *d = realloc(b->d, (size_t)cap * sizeof *d);
        if (!d) return false;
        b->d = d;
        b->cap = cap;
    }
    b->d[b->n++] = c;
    return true;
}

static bool cp_push_n(CpBuf *b, const uint32_t *c, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!cp_push(b, c[i])) return false;
    return true;
}

static void cp_swap(CpBuf *a, CpBuf *b) {
    CpBuf t = *a;
    *a = *b;
    *b = t;
}

static bool cp_equal(const CpBuf *a, const CpBuf *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->d, b->d, (size_t)a->n * sizeof *a->d) == 0);
}

/* UTF-8 -> code points; an invalid or truncated sequence gives U+FFFD per byte */
static bool utf8_decode(const char *s, int64_t len, CpBuf *out) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        uint32_t c = *p, need = 0, min = 0;
        if (c < 0x80) need = 0;
        else if ((c & 0xE0) == 0xC0) need = 1, c &= 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) need = 2, c &= 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) need = 3, c &= 0x07, min = 0x10000;
        else need = 9;
        uint32_t k = 1;
        for (; need != 9 && k <= need; k++) {
            if (p + k >= end || (p[k] & 0xC0) != 0x80) break;
            c = (c << 6) | (p[k] & 0x3F);
        }
        if (need == 9 || k <= need || c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            if (!cp_push(out, 0xFFFD)) return false;
            p++;
            continue;
        }
        if (!cp_push(out, c)) return false;
        p += need + 1;
    }
    return true;
}

static int utf8_encode(uint32_t c, unsigned char *o) {
    if (c < 0x80) return o[0] = (unsigned char)c, 1;
    if (c < 0x800) return o[0] = (unsigned char)(0xC0 | c >> 6), o[1] = (unsigned char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | c >> 12);
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | c >> 18);
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- table lookups ---- */

static bool in_ranges(const UniRange *r, int32_t n, uint32_t c) {
    int32_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        if (c < r[m].lo) hi = m - 1;
        else if (c > r[m].hi) lo = m + 1;
        else return true;
    }
    return false;
}

static bool is_letter(uint32_t c) { return c < 0x80 ? (c | 32) - 'a' < 26 : in_ranges(uni_letters, uni_letters_n, c); }
static bool is_number(uint32_t c) { return c < 0x80 ? c - '0' < 10 : in_ranges(uni_numbers, uni_numbers_n, c); }
static bool is_space(uint32_t c) { return in_ranges(uni_spaces, uni_spaces_n, c); }

static uint32_t lower_of(uint32_t c) {
    if (c < 0x80) return c - 'A' < 26 ? c + 32 : c;
    int32_t lo = 0, hi = uni_lower_n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        const UniCaseRun *r = &uni_lower[m];
        if (c < r->lo) hi = m - 1;
        else if (c > r->hi) lo = m + 1;
        else return (c - r->lo) % r->stride == 0 ? (uint32_t)((int64_t)c + r->delta) : c;
    }
    return c;
}

static const UniMap *find_map(const UniMap *t, int32_t n, uint32_t c) {
    int32_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        if (c < t[m].cp) hi = m - 1;
        else if (c > t[m].cp) lo = m + 1;
        else return &t[m];
    }
    return NULL;
}

static uint8_t ccc_of(uint32_t c) {
    if (c < 0x300) return 0;
    int32_t lo = 0, hi = uni_ccc_n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        if (c < uni_ccc[m].lo) hi = m - 1;
        else if (c > uni_ccc[m].hi) lo = m + 1;
        else return uni_ccc[m].ccc;
    }
    return 0;
}

static const UniDecomp *decomp_of(uint32_t c) {
    int32_t lo = 0, hi = uni_decomp_n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        if (c < uni_decomp[m].cp) hi = m - 1;
        else if (c > uni_decomp[m].cp) lo = m + 1;
        else return &uni_decomp[m];
    }
    return NULL;
}

static const HtmlEntity *find_entity(const HtmlEntity *t, int32_t n, const char *name) {
    int32_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        int c = strcmp(name, t[m].name);
        if (c < 0) hi = m - 1;
        else if (c > 0) lo = m + 1;
        else return &t[m];
    }
    return NULL;
}

/* ---- NFC (UAX #15: canonical decomposition, ordering, composition; Hangul by formula) ---- */

#define HANGUL_S 0xAC00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11A7u
#define HANGUL_NV 21u
#define HANGUL_NT 28u
#define HANGUL_N (HANGUL_NV * HANGUL_NT)
#define HANGUL_COUNT 11172u

static bool decompose(uint32_t c, CpBuf *out) {
    if (c - HANGUL_S < HANGUL_COUNT) {
        uint32_t s = c - HANGUL_S, t = s % HANGUL_NT;
        if (!cp_push(out, HANGUL_L + s / HANGUL_N) || !cp_push(out, HANGUL_V + (s % HANGUL_N) / HANGUL_NT)) return false;
        return t ? cp_push(out, HANGUL_T + t) : true;
    }
    const UniDecomp *d = c >= 0xC0 ? decomp_of(c) : NULL;
    if (!d) return cp_push(out, c);
    if (!decompose(d->a, out)) return false;
    return d->b ? decompose(d->b, out) : true;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a - HANGUL_L < 19 && b - HANGUL_V < HANGUL_NV)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_NV + (b - HANGUL_V)) * HANGUL_NT;
    if (a - HANGUL_S < HANGUL_COUNT && (a - HANGUL_S) % HANGUL_NT == 0 && b - HANGUL_T - 1 < HANGUL_NT - 1)
        return a + (b - HANGUL_T);
    int32_t lo = 0, hi = uni_comp_n - 1;
    while (lo <= hi) {
        int32_t m = (lo + hi) / 2;
        const UniComp *p = &uni_comp[m];
        if (a < p->a || (a == p->a && b < p->b)) hi = m - 1;
        else if (a > p->a || b > p->b) lo = m + 1;
        else return p->c;
    }
    return 0;
}

static bool nfc(CpBuf *text, CpBuf *tmp) {
    bool plain = true;
    for (int64_t i = 0; i < text->n && plain; i++) plain = text->d[i] < 0x300;
    if (plain) return true;
    tmp->n = 0;
    for (int64_t i = 0; i < text->n; i++)
        if (!decompose(text->d[i], tmp)) return false;
    uint32_t *b = tmp->d;
    int64_t n = tmp->n;
    for (int64_t i = 1; i < n; i++) { /* stable canonical ordering of non-starter runs */
        uint8_t ci = ccc_of(b[i]);
        if (!ci) continue;
        for (int64_t j = i; j > 0; j--) {
            uint8_t cp = ccc_of(b[j - 1]);
            if (!cp || cp <= ci) break;
            uint32_t t = b[j];
            b[j] = b[j - 1];
            b[j - 1] = t;
        }
    }
    if (n > 0) {
        int64_t starter = 0, out = 1;
        int last = ccc_of(b[0]) ? 256 : 0;
        for (int64_t i = 1; i < n; i++) {
            uint32_t c = b[i];
            int cc = ccc_of(c);
            uint32_t comp = compose_pair(b[starter], c);
            if (comp && (last < cc || last == 0)) {
                b[starter] = comp;
            } else {
                if (cc == 0) starter = out;
                last = cc;
                b[out++] = c;
            }
        }
        n = out;
    }
    tmp->n = n;
    cp_swap(text, tmp);
    return true;
}

/* ---- HTML: html.unescape and ftfy's stricter unescape_html ---- */

static bool is_digit(uint32_t c) { return c - '0' < 10; }
static bool is_hex(uint32_t c) { return is_digit(c) || (c | 32) - 'a' < 6; }

/* html.unescape's numeric reference: digits s[0..n) in base `base` */
static bool numeric_ref(const uint32_t *s, int64_t n, int base, CpBuf *out) {
    uint64_t v = 0;
    bool big = false;
    for (int64_t i = 0; i < n; i++) {
        uint32_t d = is_digit(s[i]) ? s[i] - '0' : (s[i] | 32) - 'a' + 10;
        v = v * (uint64_t)base + d;
        if (v > 0x10FFFF) big = true, v = 0x110000;
    }
    if (big) return cp_push(out, 0xFFFD);
    const UniMap *m = find_map(html_invalid_charrefs, html_invalid_charrefs_n, (uint32_t)v);
    if (m) return cp_push(out, m->to[0]);
    if (v >= 0xD800 && v <= 0xDFFF) return cp_push(out, 0xFFFD);
    for (int32_t i = 0; i < html_invalid_codepoints_n; i++)
        if (html_invalid_codepoints[i] == v) return true;
    return cp_push(out, (uint32_t)v);
}

/* ASCII copy of s[0..n) into buf; false if any code point is not ASCII */
static bool ascii_of(const uint32_t *s, int64_t n, char *buf) {
    for (int64_t i = 0; i < n; i++) {
        if (s[i] >= 0x80 || s[i] == 0) return false;
        buf[i] = (char)s[i];
    }
    buf[n] = 0;
    return true;
}

/* Python html.unescape (the _charref regex and _replace_charref) */
static bool html_unescape(const CpBuf *in, CpBuf *out) {
    out->n = 0;
    const uint32_t *s = in->d;
    int64_t n = in->n;
    for (int64_t i = 0; i < n;) {
        if (s[i] != '&' || i + 1 >= n) {
            if (!cp_push(out, s[i++])) return false;
            continue;
        }
        int64_t j = i + 1;
        if (s[j] == '#') {
            int64_t k = j + 1;
            int base = 10;
            if (k < n && (s[k] == 'x' || s[k] == 'X') && k + 1 < n && is_hex(s[k + 1])) base = 16, k++;
            int64_t d0 = k;
            while (k < n && (base == 16 ? is_hex(s[k]) : is_digit(s[k]))) k++;
            if (k == d0) {
                if (!cp_push(out, s[i++])) return false;
                continue;
            }
            if (!numeric_ref(s + d0, k - d0, base, out)) return false;
            i = k < n && s[k] == ';' ? k + 1 : k;
            continue;
        }
        int64_t k = j;
        while (k < n && k - j < 32 && s[k] != '\t' && s[k] != '\n' && s[k] != '\f' && s[k] != ' ' && s[k] != '<' &&
               s[k] != '&' && s[k] != '#' && s[k] != ';')
            k++;
        if (k == j) {
            if (!cp_push(out, s[i++])) return false;
            continue;
        }
        int64_t end = k < n && s[k] == ';' ? k + 1 : k, len = end - j;
        char name[40];
        const HtmlEntity *e = ascii_of(s + j, len, name) ? find_entity(html_entities, html_entities_n, name) : NULL;
        int64_t used = len;
        for (int64_t x = len - 1; !e && x > 1; x--)
            if (ascii_of(s + j, x, name) && (e = find_entity(html_entities, html_entities_n, name))) used = x;
        if (!e) { /* '&' + s: unchanged */
            if (!cp_push_n(out, s + i, end - i)) return false;
        } else if (!cp_push_n(out, e->cp, e->n) || !cp_push_n(out, s + j + used, len - used)) {
            return false;
        }
        i = end;
    }
    return true;
}

/* ftfy.fixes.unescape_html: &#?[0-9A-Za-z]{1,24}; decoded only when it is a known entity (or ftfy's
 * all-caps one), or a numeric reference html.unescape consumes whole */
static bool ftfy_unescape(const CpBuf *in, CpBuf *out, CpBuf *tmp) {
    out->n = 0;
    const uint32_t *s = in->d;
    int64_t n = in->n;
    for (int64_t i = 0; i < n;) {
        int64_t k = i + 1;
        if (s[i] == '&' && k < n && s[k] == '#') k++;
        int64_t a = k;
        while (s[i] == '&' && k < n && k - a < 24 && s[k] < 0x80 && (is_digit(s[k]) || (s[k] | 32) - 'a' < 26)) k++;
        if (s[i] != '&' || k == a || k >= n || s[k] != ';') {
            if (!cp_push(out, s[i++])) return false;
            continue;
        }
        char name[40];
        ascii_of(s + i + 1, k - i, name); /* without the '&', with the ';' */
        const HtmlEntity *e = name[0] != '#' ? find_entity(html_entities, html_entities_n, name) : NULL;
        if (!e && name[0] != '#') e = find_entity(ftfy_upper_entities, ftfy_upper_entities_n, name);
        if (e) {
            if (!cp_push_n(out, e->cp, e->n)) return false;
        } else if (name[0] == '#') {
            CpBuf ref = {(uint32_t *)(s + i), k + 1 - i, k + 1 - i};
            if (!html_unescape(&ref, tmp)) return false;
            bool semi = false;
            for (int64_t q = 0; q < tmp->n; q++) semi = semi || tmp->d[q] == ';';
            if (!cp_push_n(out, semi ? s + i : tmp->d, semi ? k + 1 - i : tmp->n)) return false;
        } else if (!cp_push_n(out, s + i, k + 1 - i)) {
            return false;
        }
        i = k + 1;
    }
    return true;
}

/* ---- cleaning ---- */

typedef struct Scratch {
    CpBuf a, b, c;
} Scratch;

static void scratch_free(Scratch *s) {
    free(s->a.d);
    free(s->b.d);
    free(s->c.d);
}

/* ftfy's per-character fixes after removing ANSI terminal escapes ("\033[" digits/';' letter) */
static bool ftfy_chars(const CpBuf *in, CpBuf *out) {
    out->n = 0;
    const uint32_t *s = in->d;
    for (int64_t i = 0; i < in->n; i++) {
        if (s[i] == 0x1B && i + 1 < in->n && s[i + 1] == '[') {
            int64_t k = i + 2;
            while (k < in->n && (is_digit(s[k]) || s[k] == ';')) k++;
            if (k < in->n && s[k] < 0x80 && (s[k] | 32) - 'a' < 26) {
                i = k;
                continue;
            }
        }
        const UniMap *m = find_map(uni_ftfy, uni_ftfy_n, s[i]);
        if (!(m ? cp_push_n(out, m->to, m->n) : cp_push(out, s[i]))) return false;
    }
    return true;
}

/* ftfy.fix_text, one segment (a line with its '\n'); `html` says whether entities are decoded */
static bool ftfy_segment(CpBuf *t, bool html, Scratch *x) {
    for (int round = 0; round < UNESCAPE_ROUNDS_MAX; round++) {
        CpBuf *orig = &x->c;
        orig->n = 0;
        if (!cp_push_n(orig, t->d, t->n)) return false;
        if (html) {
            if (!ftfy_unescape(t, &x->a, &x->b)) return false;
            cp_swap(t, &x->a);
        }
        if (!ftfy_chars(t, &x->a)) return false;
        cp_swap(t, &x->a);
        if (!nfc(t, &x->a)) return false;
        if (cp_equal(t, orig)) break;
    }
    return true;
}

static bool ftfy_fix_text(CpBuf *t, Scratch *x) {
    CpBuf out = {0}, seg = {0};
    bool html = true, ok = true;
    for (int64_t i = 0; i < t->n && ok;) {
        int64_t e = i;
        while (e < t->n && t->d[e] != '\n') e++;
        if (e < t->n) e++;
        seg.n = 0;
        ok = cp_push_n(&seg, t->d + i, e - i);
        for (int64_t k = i; k < e && html; k++) html = t->d[k] != '<'; /* once off, off for the rest */
        ok = ok && ftfy_segment(&seg, html, x) && cp_push_n(&out, seg.d, seg.n);
        i = e;
    }
    free(seg.d);
    if (ok) cp_swap(t, &out);
    free(out.d);
    return ok;
}

static bool is_cased(uint32_t c) { return in_ranges(uni_cased, uni_cased_n, c); }
static bool is_case_ignorable(uint32_t c) { return in_ranges(uni_case_ignorable, uni_case_ignorable_n, c); }

/* Python's final-sigma context for U+03A3 at i */
static bool final_sigma(const uint32_t *s, int64_t n, int64_t i) {
    int64_t j = i - 1;
    while (j >= 0 && is_case_ignorable(s[j])) j--;
    if (j < 0 || !is_cased(s[j])) return false;
    j = i + 1;
    while (j < n && is_case_ignorable(s[j])) j++;
    return j == n || !is_cased(s[j]);
}

/* whitespace runs -> one space, stripped (str.split + join), then lower-cased */
static bool squeeze_lower(const CpBuf *in, CpBuf *out, bool python_lower) {
    out->n = 0;
    bool pending = false;
    for (int64_t i = 0; i < in->n; i++) {
        uint32_t c = in->d[i];
        if (is_space(c)) {
            pending = out->n > 0;
            continue;
        }
        if (pending && !cp_push(out, ' ')) return false;
        pending = false;
        if (c == 0x130) {
            if (!cp_push(out, 'i') || !cp_push(out, 0x307)) return false;
        } else if (c == 0x3A3 && python_lower) {
            if (!cp_push(out, final_sigma(in->d, in->n, i) ? 0x3C2 : 0x3C3)) return false;
        } else if (!cp_push(out, lower_of(c))) {
            return false;
        }
    }
    return true;
}

static bool clean_text(CpBuf *t, TokenizerClean mode, Scratch *x) {
    if (mode == TOKENIZER_CLEAN_HF) {
        if (!nfc(t, &x->a)) return false;
    } else {
        if (!ftfy_fix_text(t, x)) return false;
        for (int r = 0; r < 2; r++) {
            if (!html_unescape(t, &x->a)) return false;
            cp_swap(t, &x->a);
        }
    }
    if (!squeeze_lower(t, &x->a, mode == TOKENIZER_CLEAN_OPEN_CLIP)) return false;
    cp_swap(t, &x->a);
    return true;
}

/* ---- vocabulary ---- */

static uint64_t hash_bytes(const char *s, int64_t n, uint8_t eow) {
    uint64_t h = 1469598103934665603ull ^ eow;
    for (int64_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static int32_t str_find(const ClipTokenizer *t, const char *s, int64_t n, uint8_t eow) {
    uint64_t m = (uint64_t)t->str_cap - 1;
    for (uint64_t h = hash_bytes(s, n, eow) & m;; h = (h + 1) & m) {
        int32_t id = t->str_slots[h];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && t->tok_eow[id] == eow && memcmp(t->pool + t->tok_off[id], s, (size_t)n) == 0)
            return id;
    }
}

/* later ids win, as in the Python dict the vocabulary is built into */
static void str_insert(ClipTokenizer *t, int32_t id) {
    uint64_t m = (uint64_t)t->str_cap - 1;
    const char *s = t->pool + t->tok_off[id];
    for (uint64_t h = hash_bytes(s, t->tok_len[id], t->tok_eow[id]) & m;; h = (h + 1) & m) {
        int32_t o = t->str_slots[h];
        if (o < 0 || (t->tok_len[o] == t->tok_len[id] && t->tok_eow[o] == t->tok_eow[id] &&
                      memcmp(t->pool + t->tok_off[o], s, (size_t)t->tok_len[id]) == 0)) {
            t->str_slots[h] = id;
            return;
        }
    }
}

static void pair_insert(ClipTokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1, m = (uint64_t)t->pair_cap - 1;
    for (uint64_t h = hash_pair(key) & m;; h = (h + 1) & m)
        if (t->pair_keys[h] == 0 || t->pair_keys[h] == key) {
            t->pair_keys[h] = key;
            t->pair_rank[h] = rank;
            t->pair_id[h] = id;
            return;
        }
}

static int64_t pair_find(const ClipTokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1, m = (uint64_t)t->pair_cap - 1;
    for (uint64_t h = hash_pair(key) & m;; h = (h + 1) & m) {
        if (t->pair_keys[h] == key) return (int64_t)h;
        if (t->pair_keys[h] == 0) return -1;
    }
}

/* OpenAI's bytes_to_unicode: byte -> the code point standing for it in vocabulary strings */
static void byte_chars(uint32_t *cs, uint8_t *order) {
    int k = 0, extra = 0;
    bool printable[256] = {false};
    for (int b = '!'; b <= '~'; b++) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; b++) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; b++) printable[b] = true;
    for (int b = 0; b < 256; b++)
        if (printable[b]) cs[b] = (uint32_t)b, order[k++] = (uint8_t)b;
    for (int b = 0; b < 256; b++)
        if (!printable[b]) cs[b] = 256u + (uint32_t)extra++, order[k++] = (uint8_t)b;
}

/* a vocabulary string (mapped code points, optional "</w>") -> raw bytes in out, eow flag */
static bool token_bytes(const char *tok, int64_t len, const int16_t *char_byte, char *out, int64_t *n, uint8_t *eow) {
    *eow = len >= 4 && memcmp(tok + len - 4, "</w>", 4) == 0;
    if (*eow) len -= 4;
    char z[256];
    if (len >= (int64_t)sizeof z) return false;
    memcpy(z, tok, (size_t)len);
    z[len] = 0;
    CpBuf cps = {0};
    bool ok = utf8_decode(z, len, &cps);
    *n = 0;
    for (int64_t i = 0; ok && i < cps.n; i++) {
        if (cps.d[i] >= 512 || char_byte[cps.d[i]] < 0) ok = false;
        else out[(*n)++] = (char)char_byte[cps.d[i]];
    }
    free(cps.d);
    return ok && *n > 0;
}

static Status read_file_all(const char *path, char **data, int64_t *size) {
    struct archive *a = archive_read_new();
    if (!a) return addc_error_set(ADDC_ERR_NOMEM, "tokenizer: out of memory opening %s", path);
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    Status st = ADDC_OK;
    char *buf = NULL;
    int64_t n = 0, cap = 0;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK) {
        st = addc_error_set(ADDC_ERR_IO, "tokenizer: cannot read %s: %s", path, archive_error_string(a));
        goto done;
    }
    for (;;) {
        if (cap - n < (1 << 16)) {
            cap = cap ? 2 * cap : 1 << 21;
            char *b = realloc(buf, (size_t)cap + 1);
            if (!b) {
                st = addc_error_set(ADDC_ERR_NOMEM, "tokenizer: out of memory reading %s", path);
                goto done;
            }
            buf = b;
        }
        la_ssize_t r = archive_read_data(a, buf + n, (size_t)(cap - n));
        if (r < 0) {
            st = addc_error_set(ADDC_ERR_IO, "tokenizer: %s: %s", path, archive_error_string(a));
            goto done;
        }
        if (r == 0) break;
        n += r;
    }
    buf[n] = 0;
done:
    archive_read_free(a);
    if (st != ADDC_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    *size = n;
    return ADDC_OK;
}

static Status add_token(ClipTokenizer *t, int32_t id, const char *bytes, int64_t n, uint8_t eow, int64_t *pool_n) {
    t->tok_off[id] = *pool_n;
    t->tok_len[id] = (int32_t)n;
    t->tok_eow[id] = eow;
    memcpy(t->pool + *pool_n, bytes, (size_t)n);
    *pool_n += n;
    str_insert(t, id);
    return ADDC_OK;
}

Status clip_tokenizer_load(ClipTokenizer *t, const char *path) {
    memset(t, 0, sizeof *t);
    char *text = NULL;
    int64_t size = 0;
    TRY(read_file_all(path, &text, &size));
    uint32_t cs[256];
    uint8_t order[256];
    int16_t char_byte[512];
    byte_chars(cs, order);
    for (int i = 0; i < 512; i++) char_byte[i] = -1;
    for (int b = 0; b < 256; b++) char_byte[cs[b]] = (int16_t)b;

    /* the merge lines after the first (a "#version" line), at most CLIP_N_MERGES */
    char *line = strchr(text, '\n');
    int32_t n_merges = 0;
    char **lines = malloc(CLIP_N_MERGES * sizeof *lines);
    Status st = ADDC_OK;
    if (!lines) {
        free(text);
        return addc_error_set(ADDC_ERR_NOMEM, "tokenizer: out of memory");
    }
    while (line && n_merges < CLIP_N_MERGES) {
        char *l = line + 1, *e = strchr(l, '\n');
        if (e) *e = 0;
        size_t ll = strlen(l);
        if (ll && l[ll - 1] == '\r') l[ll - 1] = 0;
        if (*l) lines[n_merges++] = l;
        line = e;
    }
    int32_t V = 512 + n_merges + 2;
    t->vocab_size = V;
    t->n_merges = n_merges;
    t->str_cap = 1;
    while (t->str_cap < 2 * (int64_t)V) t->str_cap <<= 1;
    t->pair_cap = t->str_cap;
    t->pool = malloc((size_t)size + 1024);
    t->tok_off = malloc((size_t)V * sizeof *t->tok_off);
    t->tok_len = malloc((size_t)V * sizeof *t->tok_len);
    t->tok_eow = malloc((size_t)V);
    t->str_slots = malloc((size_t)t->str_cap * sizeof *t->str_slots);
    t->pair_keys = calloc((size_t)t->pair_cap, sizeof *t->pair_keys);
    t->pair_rank = malloc((size_t)t->pair_cap * sizeof *t->pair_rank);
    t->pair_id = malloc((size_t)t->pair_cap * sizeof *t->pair_id);
    if (!t->pool || !t->tok_off || !t->tok_len || !t->tok_eow || !t->str_slots || !t->pair_keys || !t->pair_rank ||
        !t->pair_id) {
        st = addc_error_set(ADDC_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < t->str_cap; i++) t->str_slots[i] = -1;
    int64_t pool_n = 0;
    for (int i = 0; i < 256; i++) {
        char b = (char)order[i];
        add_token(t, i, &b, 1, 0, &pool_n);
        t->byte_id[order[i]] = i;
    }
    for (int i = 0; i < 256; i++) {
        char b = (char)order[i];
        add_token(t, 256 + i, &b, 1, 1, &pool_n);
    }
    for (int32_t r = 0; r < n_merges; r++) {
        char *sp = strchr(lines[r], ' ');
        char ab[2][256];
        int64_t nb[2];
        uint8_t eow[2];
        if (!sp || strchr(sp + 1, ' ') ||
            !token_bytes(lines[r], sp - lines[r], char_byte, ab[0], &nb[0], &eow[0]) ||
            !token_bytes(sp + 1, (int64_t)strlen(sp + 1), char_byte, ab[1], &nb[1], &eow[1]) || eow[0]) {
            st = addc_error_set(ADDC_ERR_FORMAT, "tokenizer: %s: merge %d ('%.60s') is not two vocabulary symbols", path,
                                r + 1, lines[r]);
            goto done;
        }
        int32_t a = str_find(t, ab[0], nb[0], 0), b = str_find(t, ab[1], nb[1], eow[1]);
        if (a < 0 || b < 0) {
            st = addc_error_set(ADDC_ERR_FORMAT, "tokenizer: %s: merge %d ('%.60s') uses a symbol no earlier merge made",
                                path, r + 1, lines[r]);
            goto done;
        }
        memcpy(ab[0] + nb[0], ab[1], (size_t)nb[1]);
        int32_t id = 512 + r;
        add_token(t, id, ab[0], nb[0] + nb[1], eow[1], &pool_n);
        pair_insert(t, a, b, r, -1);
    }
    /* merged ids by string, after every token exists (the last of equal strings wins) */
    for (int64_t h = 0; h < t->pair_cap; h++) {
        if (!t->pair_keys[h]) continue;
        uint64_t key = t->pair_keys[h] - 1;
        int32_t a = (int32_t)(key >> 32), b = (int32_t)(key & 0xffffffffu);
        char s[512];
        memcpy(s, t->pool + t->tok_off[a], (size_t)t->tok_len[a]);
        memcpy(s + t->tok_len[a], t->pool + t->tok_off[b], (size_t)t->tok_len[b]);
        t->pair_id[h] = str_find(t, s, t->tok_len[a] + t->tok_len[b], t->tok_eow[b]);
    }
    t->sot_id = V - 2;
    t->eot_id = V - 1;
    t->tok_off[V - 2] = t->tok_off[V - 1] = 0;
    t->tok_len[V - 2] = t->tok_len[V - 1] = -1; /* never equal to a byte string */
    t->tok_eow[V - 2] = t->tok_eow[V - 1] = 0;
    if (n_merges < 1) st = addc_error_set(ADDC_ERR_FORMAT, "tokenizer: %s holds no merges", path);
done:
    free(lines);
    free(text);
    if (st != ADDC_OK) clip_tokenizer_free(t);
    return st;
}

void clip_tokenizer_free(ClipTokenizer *t) {
    free(t->pool);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_eow);
    free(t->str_slots);
    free(t->pair_keys);
    free(t->pair_rank);
    free(t->pair_id);
    memset(t, 0, sizeof *t);
}

int32_t clip_tokenizer_token_id(const ClipTokenizer *t, const char *token) {
    if (!strcmp(token, "<start_of_text>") || !strcmp(token, "<|startoftext|>")) return t->sot_id;
    if (!strcmp(token, "<end_of_text>") || !strcmp(token, "<|endoftext|>")) return t->eot_id;
    uint32_t cs[256];
    uint8_t order[256];
    int16_t char_byte[512];
    byte_chars(cs, order);
    for (int i = 0; i < 512; i++) char_byte[i] = -1;
    for (int b = 0; b < 256; b++) char_byte[cs[b]] = (int16_t)b;
    char bytes[256];
    int64_t n;
    uint8_t eow;
    if (!token_bytes(token, (int64_t)strlen(token), char_byte, bytes, &n, &eow)) return -1;
    return str_find(t, bytes, n, eow);
}

/* ---- pre-tokenisation and BPE ---- */

typedef struct IdBuf {
    int32_t *d;
    int64_t n, cap;
} IdBuf;

static bool id_push(IdBuf *b, int32_t v) {
    if (b->n == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 64;
        int32_t *d = realloc(b->d, (size_t)cap * sizeof *d);
        if (!d) return false;
        b->d = d;
        b->cap = cap;
    }
    b->d[b->n++] = v;
    return true;
}

/* one piece's UTF-8 bytes -> ids, merged by rank (all occurrences of the best pair, left to right) */
static bool bpe(const ClipTokenizer *t, const unsigned char *bytes, int64_t n, IdBuf *sym, IdBuf *out) {
    sym->n = 0;
    for (int64_t i = 0; i < n; i++)
        if (!id_push(sym, t->byte_id[bytes[i]] + (i == n - 1 ? 256 : 0))) return false;
    int32_t *s = sym->d;
    int64_t m = sym->n;
    while (m > 1) {
        int32_t best = INT32_MAX, a = -1, b = -1, merged = -1;
        for (int64_t i = 0; i + 1 < m; i++) {
            int64_t h = pair_find(t, s[i], s[i + 1]);
            if (h >= 0 && t->pair_rank[h] < best) best = t->pair_rank[h], a = s[i], b = s[i + 1], merged = t->pair_id[h];
        }
        if (best == INT32_MAX) break;
        int64_t j = 0;
        for (int64_t i = 0; i < m;) {
            if (i + 1 < m && s[i] == a && s[i + 1] == b) {
                s[j++] = merged;
                i += 2;
            } else {
                s[j++] = s[i++];
            }
        }
        m = j;
    }
    for (int64_t i = 0; i < m; i++)
        if (!id_push(out, s[i])) return false;
    return true;
}

static bool match_ascii(const uint32_t *s, int64_t n, int64_t i, const char *lit) {
    for (int64_t k = 0; lit[k]; k++)
        if (i + k >= n || s[i + k] != (unsigned char)lit[k]) return false;
    return true;
}

static Status pretokenize_bpe(const ClipTokenizer *t, const CpBuf *text, TokenizerClean mode, IdBuf *out) {
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    const char *sot = mode == TOKENIZER_CLEAN_HF ? "<|startoftext|>" : "<start_of_text>";
    const char *eot = mode == TOKENIZER_CLEAN_HF ? "<|endoftext|>" : "<end_of_text>";
    const uint32_t *s = text->d;
    int64_t n = text->n;
    IdBuf sym = {0};
    unsigned char *bytes = malloc((size_t)(4 * n + 4));
    bool ok = bytes != NULL;
    for (int64_t i = 0; ok && i < n;) {
        int64_t e = i;
        if (match_ascii(s, n, i, sot) || match_ascii(s, n, i, eot)) {
            ok = id_push(out, match_ascii(s, n, i, sot) ? t->sot_id : t->eot_id);
            i += (int64_t)strlen(match_ascii(s, n, i, sot) ? sot : eot);
            continue;
        }
        if (s[i] == '\'') {
            for (size_t k = 0; k < sizeof contractions / sizeof contractions[0] && e == i; k++) {
                /* IGNORECASE: the text is lower-cased already, so only the ASCII letters matter */
                const char *c = contractions[k];
                int64_t l = (int64_t)strlen(c), q = 1;
                while (q < l && i + q < n && s[i + q] < 0x80 && (s[i + q] | 32) == (uint32_t)c[q]) q++;
                if (q == l) e = i + l;
            }
        }
        if (e == i && is_letter(s[i])) {
            while (e < n && is_letter(s[e])) e++;
        } else if (e == i && is_number(s[i])) {
            e = i + 1;
        } else if (e == i && !is_space(s[i])) {
            while (e < n && !is_space(s[e]) && !is_letter(s[e]) && !is_number(s[e])) e++;
        }
        if (e == i) {
            i++;
            continue;
        }
        int64_t nb = 0;
        for (int64_t k = i; k < e; k++) nb += utf8_encode(s[k], bytes + nb);
        ok = bpe(t, bytes, nb, &sym, out);
        i = e;
    }
    free(bytes);
    free(sym.d);
    return ok ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "tokenizer: out of memory");
}

Status clip_tokenizer_encode(const ClipTokenizer *t, const char *text, int64_t len, TokenizerClean clean, int32_t **ids,
                             int32_t *n) {
    *ids = NULL;
    *n = 0;
    if (!t->pool) return addc_error_set(ADDC_ERR_INVALID, "tokenizer: not loaded");
    CpBuf cps = {0};
    Scratch x;
    memset(&x, 0, sizeof x);
    IdBuf out = {0};
    Status st = ADDC_OK;
    if (!text) text = "", len = 0;
    if (len < 0) len = (int64_t)strlen(text);
    if (!utf8_decode(text, len, &cps) || !clean_text(&cps, clean, &x))
        st = addc_error_set(ADDC_ERR_NOMEM, "tokenizer: out of memory");
    if (st == ADDC_OK) st = pretokenize_bpe(t, &cps, clean, &out);
    free(cps.d);
    scratch_free(&x);
    if (st != ADDC_OK) {
        free(out.d);
        return st;
    }
    *ids = out.d;
    *n = (int32_t)out.n;
    return ADDC_OK;
}

Status clip_tokenizer_tokenize(const ClipTokenizer *t, const char *text, int64_t len, TokenizerClean clean,
                               int32_t context, int32_t pad_id, int32_t *out) {
    if (context < 2) return addc_error_set(ADDC_ERR_INVALID, "tokenizer: context %d < 2", context);
    int32_t *ids, n;
    TRY(clip_tokenizer_encode(t, text, len, clean, &ids, &n));
    int32_t k = 0;
    out[k++] = t->sot_id;
    for (int32_t i = 0; i < n && k < context - 1; i++) out[k++] = ids[i];
    out[k++] = t->eot_id;
    while (k < context) out[k++] = pad_id;
    free(ids);
    return ADDC_OK;
}
