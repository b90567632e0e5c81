/* core/config: YAML (libyaml events) -> node tree -> merge -> overrides -> typed struct, and
 * back to YAML. See config.h for the rules a config file must follow.
 *
 * Nodes and strings live in the Config's arena; nothing is freed until config_free. Anchored
 * nodes are deep-copied at each alias, against a per-document budget, so the tree has no
 * sharing and merging may edit it in place. */
#include "core/config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#define YAML_CHECK(expr)                                                                          \
    ADDC_CHECK_GEN("libyaml", expr, int, r_ == 1, "%s", "(no detail)", ADDC_ERR_EXTERNAL)

#define CONFIG_PATH_MAX 512
#define CONFIG_SHOW_MAX 60 /* characters of a value quoted in a message */

/* ---------------------------------------------------------------- tree */

typedef enum NodeKind { NODE_SCALAR, NODE_SEQ, NODE_MAP } NodeKind;

/* Where something was written. line 0: not in a file (an override, a schema default). */
typedef struct Pos {
    const char *src;
    int32_t line, col;
} Pos;

typedef struct Entry {
    const char *key;
    Pos pos; /* of the key */
    ConfigNode *value;
} Entry;

struct ConfigNode {
    NodeKind kind;
    bool plain; /* SCALAR: unquoted and untagged, so it may be null, a bool or a number */
    Pos pos;
    const char *text; /* SCALAR */
    int64_t n, cap;
    ConfigNode **items; /* SEQ: items[n] */
    Entry *entries;     /* MAP: entries[n] */
    int64_t size;       /* nodes in this subtree, keys included (set when parsed) */
    int32_t height;     /* nesting levels below this node (set when parsed) */
};

typedef struct PosText {
    char s[CONFIG_PATH_MAX + 64];
} PosText;

static PosText pos_text(Pos p) {
    PosText t;
    if (p.line > 0)
        snprintf(t.s, sizeof t.s, "%s:%d:%d", p.src, (int)p.line, (int)p.col);
    else
        snprintf(t.s, sizeof t.s, "%s", p.src ? p.src : "?");
    return t;
}

static void *cfg_alloc(Config *c, size_t bytes) { return arena_alloc(&c->arena, (int64_t)(bytes ? bytes : 1)); }

static char *cfg_strndup(Config *c, const char *s, size_t n) {
    char *d = cfg_alloc(c, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static char *cfg_strdup(Config *c, const char *s) { return cfg_strndup(c, s, strlen(s)); }

static ConfigNode *node_new(Config *c, NodeKind kind, Pos pos) {
    ConfigNode *n = cfg_alloc(c, sizeof *n);
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->pos = pos;
    n->size = 1;
    return n;
}

static ConfigNode *node_scalar(Config *c, Pos pos, const char *text, bool plain) {
    ConfigNode *n = node_new(c, NODE_SCALAR, pos);
    if (!n) return NULL;
    n->plain = plain;
    n->text = cfg_strdup(c, text);
    return n->text ? n : NULL;
}

static bool node_is_null(const ConfigNode *n) {
    if (n->kind != NODE_SCALAR || !n->plain) return false;
    const char *t = n->text;
    return !t[0] || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}

static Entry *map_find(const ConfigNode *m, const char *key) {
    for (int64_t i = 0; i < m->n; i++)
        if (!strcmp(m->entries[i].key, key)) return &m->entries[i];
    return NULL;
}

static Status map_append(Config *c, ConfigNode *m, Entry e) {
    if (m->n == m->cap) {
        int64_t cap = m->cap ? 2 * m->cap : 8;
        Entry *ne = cfg_alloc(c, (size_t)cap * sizeof *ne);
        if (!ne) return ADDC_ERR_NOMEM;
        if (m->n) memcpy(ne, m->entries, (size_t)m->n * sizeof *ne);
        m->entries = ne;
        m->cap = cap;
    }
    m->entries[m->n++] = e;
    return ADDC_OK;
}

static ConfigNode *node_copy(Config *c, const ConfigNode *s) {
    ConfigNode *d = cfg_alloc(c, sizeof *d);
    if (!d) return NULL;
    *d = *s;
    if (s->kind == NODE_SEQ && s->n) {
        d->items = cfg_alloc(c, (size_t)s->n * sizeof *d->items);
        if (!d->items) return NULL;
        d->cap = s->n;
        for (int64_t i = 0; i < s->n; i++)
            if (!(d->items[i] = node_copy(c, s->items[i]))) return NULL;
    } else if (s->kind == NODE_MAP && s->n) {
        d->entries = cfg_alloc(c, (size_t)s->n * sizeof *d->entries);
        if (!d->entries) return NULL;
        d->cap = s->n;
        for (int64_t i = 0; i < s->n; i++) {
            d->entries[i] = s->entries[i];
            if (!(d->entries[i].value = node_copy(c, s->entries[i].value))) return NULL;
        }
    }
    return d;
}

static const char *kind_name(const ConfigNode *n) {
    if (n->kind == NODE_SEQ) return "a list";
    if (n->kind == NODE_MAP) return "a mapping";
    return node_is_null(n) ? "an empty value" : "a scalar";
}

/* ---------------------------------------------------------------- parsing */

typedef struct Anchor {
    char *name; /* malloc'd */
    const ConfigNode *node;
} Anchor;

typedef struct Parser {
    yaml_parser_t yp;
    Config *c;
    const char *src; /* file name as shown in messages */
    bool no_lines;   /* an override's value: positions are the override itself */
    Anchor *anchors;
    int32_t nanchors, cap_anchors;
    int64_t alias_nodes; /* copied through aliases so far */
} Parser;

static Pos parser_pos(const Parser *p, yaml_mark_t m) {
    Pos pos = {p->src, 0, 0};
    if (!p->no_lines) {
        pos.line = (int32_t)m.line + 1;
        pos.col = (int32_t)m.column + 1;
    }
    return pos;
}

static Status parser_next(Parser *p, yaml_event_t *ev) {
    if (yaml_parser_parse(&p->yp, ev)) return ADDC_OK;
    const yaml_parser_t *y = &p->yp;
    if (y->error == YAML_MEMORY_ERROR) return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory while parsing YAML", p->src);
    if (y->error == YAML_READER_ERROR)
        return addc_error_set(ADDC_ERR_FORMAT, "%s: cannot read the YAML text: %s (at byte %zu)", p->src,
                              y->problem ? y->problem : "unknown problem", y->problem_offset);
    PosText at = pos_text(parser_pos(p, y->problem_mark));
    char ctx[256] = "";
    if (y->context && p->no_lines)
        snprintf(ctx, sizeof ctx, " (%s)", y->context);
    else if (y->context)
        snprintf(ctx, sizeof ctx, " (%s at line %d column %d)", y->context, (int)y->context_mark.line + 1,
                 (int)y->context_mark.column + 1);
    return addc_error_set(ADDC_ERR_FORMAT, "%s: YAML syntax error: %s%s", at.s,
                          y->problem ? y->problem : "unknown problem", ctx);
}

static Status parse_node(Parser *p, yaml_event_t *ev, int32_t depth, ConfigNode **out);

static Status check_tag(const Parser *p, const char *tag, const char *allowed, Pos pos) {
    if (!tag || !strcmp(tag, allowed) || !strcmp(tag, "!")) return ADDC_OK;
    return addc_error_set(ADDC_ERR_FORMAT, "%s: YAML tag '%s' is not supported in addc configs (only !!str)",
                          pos_text(pos).s, tag);
}

static Status parse_alias(Parser *p, const yaml_event_t *ev, int32_t depth, Pos pos, ConfigNode **out) {
    const char *name = (const char *)ev->data.alias.anchor;
    const Anchor *a = NULL;
    for (int32_t i = p->nanchors - 1; i >= 0 && !a; i--)
        if (!strcmp(p->anchors[i].name, name)) a = &p->anchors[i];
    if (!a)
        return addc_error_set(ADDC_ERR_FORMAT, "%s: alias '*%s' refers to no anchor '&%s' defined before it",
                              pos_text(pos).s, name, name);
    if (p->alias_nodes + a->node->size > CONFIG_ALIAS_BUDGET)
        return addc_error_set(ADDC_ERR_FORMAT,
                              "%s: alias '*%s' would expand the document beyond %d nodes (an alias bomb?); "
                              "addc refuses it: write the values out or split the file",
                              pos_text(pos).s, name, CONFIG_ALIAS_BUDGET);
    if (depth + a->node->height > CONFIG_MAX_DEPTH)
        return addc_error_set(ADDC_ERR_FORMAT, "%s: alias '*%s' nests the document deeper than %d levels",
                              pos_text(pos).s, name, CONFIG_MAX_DEPTH);
    p->alias_nodes += a->node->size;
    *out = node_copy(p->c, a->node);
    return *out ? ADDC_OK : ADDC_ERR_NOMEM;
}

static Status parse_seq(Parser *p, int32_t depth, ConfigNode *n) {
    ConfigNode **items = NULL;
    int64_t cap = 0;
    Status st = ADDC_OK;
    for (;;) {
        yaml_event_t ev;
        if ((st = parser_next(p, &ev))) break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        ConfigNode *child;
        if ((st = parse_node(p, &ev, depth + 1, &child))) break;
        if (n->n == cap) {
            cap = cap ? 2 * cap : 8;
            ConfigNode **ni = realloc(items, (size_t)cap * sizeof *ni);
            if (!ni) {
                st = addc_error_set(ADDC_ERR_NOMEM, "out of memory parsing %s", p->src);
                break;
            }
            items = ni;
        }
        items[n->n++] = child;
        n->size += child->size;
        if (child->height + 1 > n->height) n->height = child->height + 1;
    }
    if (!st && n->n) {
        n->items = cfg_alloc(p->c, (size_t)n->n * sizeof *items);
        if (!n->items) st = ADDC_ERR_NOMEM;
        else memcpy(n->items, items, (size_t)n->n * sizeof *items);
        n->cap = n->n;
    }
    free(items);
    return st;
}

static int entry_cmp(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    int r = strcmp(x->key, y->key);
    if (r) return r;
    if (x->pos.line != y->pos.line) return x->pos.line < y->pos.line ? -1 : 1;
    return (x->pos.col > y->pos.col) - (x->pos.col < y->pos.col);
}

/* Sorting a copy finds duplicates in O(n log n), so a huge mapping cannot stall the parser. */
static Status check_duplicates(const Parser *p, const ConfigNode *m) {
    if (m->n < 2) return ADDC_OK;
    Entry *s = malloc((size_t)m->n * sizeof *s);
    if (!s) return addc_error_set(ADDC_ERR_NOMEM, "out of memory parsing %s", p->src);
    memcpy(s, m->entries, (size_t)m->n * sizeof *s);
    qsort(s, (size_t)m->n, sizeof *s, entry_cmp);
    Status st = ADDC_OK;
    for (int64_t i = 1; i < m->n && !st; i++) {
        if (strcmp(s[i - 1].key, s[i].key)) continue;
        if (p->no_lines)
            st = addc_error_set(ADDC_ERR_FORMAT, "%s: duplicate key '%s' in one mapping", p->src, s[i].key);
        else
            st = addc_error_set(ADDC_ERR_FORMAT,
                                "%s: duplicate key '%s' (also at line %d of the same mapping); keep one",
                                pos_text(s[i].pos).s, s[i].key, (int)s[i - 1].pos.line);
    }
    free(s);
    return st;
}

static Status parse_map(Parser *p, int32_t depth, ConfigNode *n) {
    Entry *es = NULL;
    int64_t cap = 0;
    Status st = ADDC_OK;
    for (;;) {
        yaml_event_t ev;
        if ((st = parser_next(p, &ev))) break;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        Pos kpos = parser_pos(p, ev.start_mark);
        ConfigNode *key, *value;
        if ((st = parse_node(p, &ev, depth + 1, &key))) break;
        if (key->kind != NODE_SCALAR) {
            st = addc_error_set(ADDC_ERR_FORMAT, "%s: a key must be a plain name, not %s", pos_text(kpos).s,
                                kind_name(key));
            break;
        }
        if (key->plain && !strcmp(key->text, "<<")) {
            st = addc_error_set(ADDC_ERR_FORMAT,
                                "%s: merge keys (<<) are not supported in addc configs; list the keys, or "
                                "put the shared part in a file that is loaded first",
                                pos_text(kpos).s);
            break;
        }
        if ((st = parser_next(p, &ev))) break;
        if ((st = parse_node(p, &ev, depth + 1, &value))) break;
        if (n->n == cap) {
            cap = cap ? 2 * cap : 8;
            Entry *ne = realloc(es, (size_t)cap * sizeof *ne);
            if (!ne) {
                st = addc_error_set(ADDC_ERR_NOMEM, "out of memory parsing %s", p->src);
                break;
            }
            es = ne;
        }
        es[n->n++] = (Entry){key->text, kpos, value};
        n->size += 1 + value->size;
        if (value->height + 1 > n->height) n->height = value->height + 1;
    }
    if (!st && n->n) {
        n->entries = cfg_alloc(p->c, (size_t)n->n * sizeof *es);
        if (!n->entries) st = ADDC_ERR_NOMEM;
        else memcpy(n->entries, es, (size_t)n->n * sizeof *es);
        n->cap = n->n;
    }
    free(es);
    return st ? st : check_duplicates(p, n);
}

static Status anchor_add(Parser *p, const char *name, const ConfigNode *node) {
    if (p->nanchors == p->cap_anchors) {
        int32_t cap = p->cap_anchors ? 2 * p->cap_anchors : 8;
        Anchor *na = realloc(p->anchors, (size_t)cap * sizeof *na);
        if (!na) return addc_error_set(ADDC_ERR_NOMEM, "out of memory parsing %s", p->src);
        p->anchors = na;
        p->cap_anchors = cap;
    }
    char *copy = strdup(name);
    if (!copy) return addc_error_set(ADDC_ERR_NOMEM, "out of memory parsing %s", p->src);
    p->anchors[p->nanchors++] = (Anchor){copy, node};
    return ADDC_OK;
}

/* Builds the node that starts with `ev` (consumed) and everything inside it. */
static Status parse_node(Parser *p, yaml_event_t *ev, int32_t depth, ConfigNode **out) {
    Pos pos = parser_pos(p, ev->start_mark);
    const char *anchor = NULL;
    ConfigNode *n = NULL;
    Status st = ADDC_OK;
    if (depth > CONFIG_MAX_DEPTH) {
        st = addc_error_set(ADDC_ERR_FORMAT, "%s: the document nests deeper than %d levels", pos_text(pos).s,
                            CONFIG_MAX_DEPTH);
        goto done;
    }
    switch (ev->type) {
    case YAML_ALIAS_EVENT: st = parse_alias(p, ev, depth, pos, &n); break;
    case YAML_SCALAR_EVENT: {
        const char *tag = (const char *)ev->data.scalar.tag;
        anchor = (const char *)ev->data.scalar.anchor;
        if ((st = check_tag(p, tag, YAML_STR_TAG, pos))) break;
        const char *v = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        if (memchr(v, 0, len)) {
            st = addc_error_set(ADDC_ERR_FORMAT, "%s: a value contains a NUL character", pos_text(pos).s);
            break;
        }
        if (!(n = node_new(p->c, NODE_SCALAR, pos)) || !(n->text = cfg_strndup(p->c, v, len))) {
            st = ADDC_ERR_NOMEM;
            break;
        }
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag;
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
        anchor = (const char *)ev->data.sequence_start.anchor;
        if ((st = check_tag(p, (const char *)ev->data.sequence_start.tag, YAML_SEQ_TAG, pos))) break;
        if (!(n = node_new(p->c, NODE_SEQ, pos))) st = ADDC_ERR_NOMEM;
        else st = parse_seq(p, depth, n);
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = (const char *)ev->data.mapping_start.anchor;
        if ((st = check_tag(p, (const char *)ev->data.mapping_start.tag, YAML_MAP_TAG, pos))) break;
        if (!(n = node_new(p->c, NODE_MAP, pos))) st = ADDC_ERR_NOMEM;
        else st = parse_map(p, depth, n);
        break;
    default: st = addc_error_set(ADDC_ERR_FORMAT, "%s: unexpected YAML event %d", pos_text(pos).s, (int)ev->type);
    }
    if (!st && anchor) st = anchor_add(p, anchor, n);
done:
    yaml_event_delete(ev);
    *out = st ? NULL : n;
    return st;
}

/* Expects one event of `type` (or STREAM_END when `or_end`); *got tells which came. */
static Status parser_expect(Parser *p, yaml_event_type_t type, bool or_end, bool *got_end) {
    yaml_event_t ev;
    TRY(parser_next(p, &ev));
    yaml_event_type_t t = ev.type;
    Pos pos = parser_pos(p, ev.start_mark);
    yaml_event_delete(&ev);
    if (got_end) *got_end = t == YAML_STREAM_END_EVENT;
    if (t == type || (or_end && t == YAML_STREAM_END_EVENT)) return ADDC_OK;
    if (type == YAML_STREAM_END_EVENT)
        return addc_error_set(ADDC_ERR_FORMAT,
                              "%s: a second YAML document ('---') starts here; put each document in its own "
                              "file and load the files in order",
                              pos_text(pos).s);
    return addc_error_set(ADDC_ERR_FORMAT, "%s: unexpected YAML structure (event %d)", pos_text(pos).s, (int)t);
}

/* Parses one YAML stream of at most one document; *out is NULL when it holds none. */
static Status parse_text(Config *c, const char *src, bool no_lines, const char *text, size_t len, ConfigNode **out) {
    Parser p = {.c = c, .src = src, .no_lines = no_lines};
    *out = NULL;
    YAML_CHECK(yaml_parser_initialize(&p.yp));
    yaml_parser_set_input_string(&p.yp, (const unsigned char *)text, len);
    bool end = false;
    Status st = parser_expect(&p, YAML_STREAM_START_EVENT, false, NULL);
    if (!st) st = parser_expect(&p, YAML_DOCUMENT_START_EVENT, true, &end);
    if (!st && !end) {
        yaml_event_t ev;
        st = parser_next(&p, &ev);
        if (!st) st = parse_node(&p, &ev, 1, out);
        if (!st) st = parser_expect(&p, YAML_DOCUMENT_END_EVENT, false, NULL);
        if (!st) st = parser_expect(&p, YAML_STREAM_END_EVENT, false, NULL);
    }
    for (int32_t i = 0; i < p.nanchors; i++) free(p.anchors[i].name);
    free(p.anchors);
    yaml_parser_delete(&p.yp);
    if (st) *out = NULL;
    return st;
}

/* ---------------------------------------------------------------- loading and merging */

void config_init(Config *c) {
    memset(c, 0, sizeof *c);
    arena_init(&c->arena, 64 << 10, 0);
}

void config_free(Config *c) {
    arena_free(&c->arena);
    memset(c, 0, sizeof *c);
}

static Status root_ensure(Config *c) {
    if (c->root) return ADDC_OK;
    c->root = node_new(c, NODE_MAP, (Pos){"(empty)", 0, 0});
    return c->root ? ADDC_OK : ADDC_ERR_NOMEM;
}

/* Mappings merge key by key; anything else replaces, except that an empty value does not
 * erase a mapping (a later file's `train:` with every key commented out changes nothing). */
static Status merge_into(Config *c, ConfigNode *dst, const ConfigNode *src) {
    for (int64_t i = 0; i < src->n; i++) {
        const Entry *e = &src->entries[i];
        Entry *d = map_find(dst, e->key);
        if (!d) {
            TRY(map_append(c, dst, *e));
        } else if (d->value->kind == NODE_MAP && e->value->kind == NODE_MAP) {
            TRY(merge_into(c, d->value, e->value));
        } else if (!(d->value->kind == NODE_MAP && node_is_null(e->value))) {
            d->value = e->value;
            d->pos = e->pos;
        }
    }
    return ADDC_OK;
}

static Status load_text(Config *c, const char *name, const char *text, size_t len) {
    const char *src = cfg_strdup(c, name);
    if (!src) return ADDC_ERR_NOMEM;
    ConfigNode *doc;
    TRY(parse_text(c, src, false, text, len, &doc));
    TRY(root_ensure(c));
    if (!doc || node_is_null(doc)) return ADDC_OK;
    if (doc->kind != NODE_MAP)
        return addc_error_set(ADDC_ERR_FORMAT,
                              "%s: the top level of a config must be a mapping (key: value lines), not %s",
                              pos_text(doc->pos).s, kind_name(doc));
    return merge_into(c, c->root, doc);
}

Status config_load_string(Config *c, const char *name, const char *text) {
    return load_text(c, name, text, strlen(text));
}

Status config_load_file(Config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return addc_error_set(ADDC_ERR_IO, "cannot open config file '%s': %s", path, strerror(errno));
    char *buf = malloc(CONFIG_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return addc_error_set(ADDC_ERR_NOMEM, "out of memory reading config file '%s'", path);
    }
    size_t len = fread(buf, 1, CONFIG_MAX_FILE_BYTES + 1, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    Status st;
    if (err)
        st = addc_error_set(ADDC_ERR_IO, "cannot read config file '%s': %s", path, strerror(err));
    else if (len > CONFIG_MAX_FILE_BYTES)
        st = addc_error_set(ADDC_ERR_FORMAT, "config file '%s' is larger than %d MiB", path,
                            CONFIG_MAX_FILE_BYTES >> 20);
    else
        st = load_text(c, path, buf, len);
    free(buf);
    return st;
}

static bool key_char_ok(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-';
}

Status config_override(Config *c, const char *assignment) {
    const char *a = assignment;
    const char *eq = strchr(a, '=');
    if (!eq || eq == a)
        return addc_error_set(ADDC_ERR_FORMAT, "bad override '%s': expected key.path=value (e.g. train.lr=1e-4)", a);
    for (const char *s = a; s < eq; s++) {
        if (*s == '.' && (s == a || s + 1 == eq || s[1] == '.'))
            return addc_error_set(ADDC_ERR_FORMAT,
                                  "bad override '%s': empty key in the path '%.*s' (expected key.path=value)", a,
                                  (int)(eq - a), a);
        if (*s != '.' && !key_char_ok(*s))
            return addc_error_set(ADDC_ERR_FORMAT,
                                  "bad override '%s': character '%c' in the path '%.*s'; keys are letters, "
                                  "digits, '_' and '-', joined by '.'",
                                  a, *s, (int)(eq - a), a);
    }
    char *src = malloc(strlen(a) + 32);
    if (!src) return addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    sprintf(src, "override '%s'", a);
    const char *srcp = cfg_strdup(c, src);
    free(src);
    if (!srcp) return ADDC_ERR_NOMEM;
    Pos pos = {srcp, 0, 0};

    ConfigNode *value;
    TRY(parse_text(c, srcp, true, eq + 1, strlen(eq + 1), &value));
    if (!value && !(value = node_scalar(c, pos, "", true))) return ADDC_ERR_NOMEM;
    if (value->kind == NODE_MAP)
        return addc_error_set(ADDC_ERR_FORMAT,
                              "%s: the value is a mapping; set each key with its own key.path=value", srcp);
    TRY(root_ensure(c));

    ConfigNode *node = c->root;
    const char *seg = a;
    for (;;) {
        const char *end = seg;
        while (end < eq && *end != '.') end++;
        char *key = cfg_strndup(c, seg, (size_t)(end - seg));
        if (!key) return ADDC_ERR_NOMEM;
        Entry *e = map_find(node, key);
        if (end == eq) {
            if (e) {
                e->value = value;
                e->pos = pos;
                return ADDC_OK;
            }
            return map_append(c, node, (Entry){key, pos, value});
        }
        if (!e) {
            ConfigNode *m = node_new(c, NODE_MAP, pos);
            if (!m) return ADDC_ERR_NOMEM;
            TRY(map_append(c, node, (Entry){key, pos, m}));
            e = &node->entries[node->n - 1];
        } else if (e->value->kind != NODE_MAP) {
            return addc_error_set(ADDC_ERR_FORMAT, "%s: '%.*s' is %s (%s), not a mapping, so it has no key '%.*s'",
                                  srcp, (int)(end - a), a, kind_name(e->value), pos_text(e->value->pos).s,
                                  (int)(strcspn(end + 1, ".=")), end + 1);
        }
        node = e->value;
        seg = end + 1;
    }
}

/* ---------------------------------------------------------------- binding */

static const char *const type_names[CONFIG_TYPE_COUNT] = {
    [CONFIG_TYPE_BOOL] = "a bool (true or false)", [CONFIG_TYPE_INT] = "an int",
    [CONFIG_TYPE_FLOAT] = "a float",               [CONFIG_TYPE_STRING] = "a string",
    [CONFIG_TYPE_ENUM] = "one of the names",       [CONFIG_TYPE_STRUCT] = "a mapping",
    [CONFIG_TYPE_LIST] = "a list",
};

/* What was found, for "expected X, got Y". */
typedef struct GotText {
    char s[CONFIG_SHOW_MAX + 40];
} GotText;

static GotText got_text(const ConfigNode *n) {
    GotText g;
    if (n->kind != NODE_SCALAR || node_is_null(n)) {
        snprintf(g.s, sizeof g.s, "%s", kind_name(n));
        return g;
    }
    size_t len = strlen(n->text);
    int show = len > CONFIG_SHOW_MAX ? CONFIG_SHOW_MAX - 3 : (int)len;
    snprintf(g.s, sizeof g.s, "%s'%.*s%s'", n->plain ? "" : "the quoted string ", show, n->text,
             len > CONFIG_SHOW_MAX ? "..." : "");
    return g;
}

static Status type_error(const char *path, const char *expected, const ConfigNode *n) {
    return addc_error_set(ADDC_ERR_FORMAT, "%s: expected %s, got %s (%s)", path, expected, got_text(n).s,
                          pos_text(n->pos).s);
}

/* Levenshtein distance, case-insensitive; -1 when either string is too long to bother. */
static int edit_distance(const char *a, const char *b) {
    enum { L = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= L || lb >= L) return -1;
    int row[L + 1];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int sub = diag + ((a[i - 1] | 32) != (b[j - 1] | 32));
            int best = sub < up + 1 ? sub : up + 1;
            row[j] = best < row[j - 1] + 1 ? best : row[j - 1] + 1;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest of `n` names to `word`, or NULL when none is close. */
static const char *closest(const char *word, const char *(*name_at)(const void *, int32_t), const void *set,
                           int32_t n) {
    const char *best = NULL;
    int bestd = 1 << 30;
    for (int32_t i = 0; i < n; i++) {
        const char *cand = name_at(set, i);
        int d = edit_distance(word, cand);
        size_t lmax = strlen(word) > strlen(cand) ? strlen(word) : strlen(cand);
        if (d >= 0 && d <= 1 + (int)lmax / 4 && d < bestd) {
            bestd = d;
            best = cand;
        }
    }
    return best;
}

static const char *field_name_at(const void *s, int32_t i) { return ((const ConfigSchema *)s)->fields[i].name; }
static const char *enum_name_at(const void *f, int32_t i) { return ((const ConfigField *)f)->names[i]; }

/* "a, b, c" into buf, cut short when long. */
static void join_names(char *buf, size_t cap, const char *(*name_at)(const void *, int32_t), const void *set,
                       int32_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (int32_t i = 0; i < n && used + 8 < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", name_at(set, i));
        if (w < 0 || (size_t)w >= cap - used) {
            snprintf(buf + (cap > 4 ? cap - 4 : 0), 4, "...");
            return;
        }
        used += (size_t)w;
    }
}

static void path_join(char *out, const char *parent, const char *name) {
    if (parent[0])
        snprintf(out, CONFIG_PATH_MAX, "%s.%s", parent, name);
    else
        snprintf(out, CONFIG_PATH_MAX, "%s", name);
}

static bool is_digits(const char *s, int base) {
    if (!*s) return false;
    for (; *s; s++) {
        int ok = base == 16 ? (*s >= '0' && *s <= '9') || ((*s | 32) >= 'a' && (*s | 32) <= 'f')
                            : *s >= '0' && *s < '0' + base;
        if (!ok) return false;
    }
    return true;
}

/* YAML 1.2 core float syntax; *out the value. false: not a float. *overflow: too large. */
static bool parse_float_text(const char *t, double *out, bool *overflow) {
    *overflow = false;
    const char *s = t + (*t == '-' || *t == '+');
    if (!strcmp(s, ".inf") || !strcmp(s, ".Inf") || !strcmp(s, ".INF")) {
        *out = *t == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (s == t && (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN"))) {
        *out = NAN;
        return true;
    }
    int digits = 0;
    while (*s >= '0' && *s <= '9') s++, digits++;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') s++, digits++;
    }
    if (!digits) return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        s += *s == '-' || *s == '+';
        if (!(*s >= '0' && *s <= '9')) return false;
        while (*s >= '0' && *s <= '9') s++;
    }
    if (*s) return false;
    errno = 0;
    *out = strtod(t, NULL);
    *overflow = errno == ERANGE && isinf(*out);
    return true;
}

/* 0: ok; 1: not an int; 2: out of int64 range. */
static int parse_int_text(const char *t, int64_t *out) {
    const char *s = t;
    bool neg = *s == '-';
    s += *s == '-' || *s == '+';
    int base = 10;
    if (s[0] == '0' && s[1] == 'x') base = 16, s += 2;
    else if (s[0] == '0' && s[1] == 'o') base = 8, s += 2;
    if (!is_digits(s, base)) {
        double d;
        bool of;
        if (!parse_float_text(t, &d, &of) || isnan(d)) return 1;
        if (of || isinf(d) || d >= 0x1p63 || d < -0x1p63) return 2;
        if (d != trunc(d)) return 1;
        *out = (int64_t)d;
        return 0;
    }
    uint64_t v = 0, lim = neg ? (1ull << 63) : (1ull << 63) - 1;
    for (; *s; s++) {
        int dig = *s <= '9' ? *s - '0' : (*s | 32) - 'a' + 10;
        if (v > (lim - (uint64_t)dig) / (uint64_t)base) return 2;
        v = v * (uint64_t)base + (uint64_t)dig;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static Status range_error(const char *path, const ConfigField *f, const ConfigNode *n, const char *what) {
    char range[96];
    if (f->min == INT64_MIN && f->max == INT64_MAX) snprintf(range, sizeof range, "it does not fit in 64 bits");
    else if (f->max == INT64_MAX) snprintf(range, sizeof range, "it must be at least %lld", (long long)f->min);
    else if (f->min == INT64_MIN) snprintf(range, sizeof range, "it must be at most %lld", (long long)f->max);
    else snprintf(range, sizeof range, "it must be in [%lld, %lld]", (long long)f->min, (long long)f->max);
    return addc_error_set(ADDC_ERR_FORMAT, "%s: %s %s is out of range: %s (%s)", path, what, got_text(n).s, range,
                          pos_text(n->pos).s);
}

/* One scalar value of type `type` (not STRUCT or LIST) into `dst`. */
static Status bind_scalar(const ConfigField *f, ConfigType type, const ConfigNode *n, const char *path,
                          void *dst) {
    if (n->kind != NODE_SCALAR || (node_is_null(n) && type != CONFIG_TYPE_STRING)) {
        if (type != CONFIG_TYPE_ENUM) return type_error(path, type_names[type], n);
        char names[400], expected[440];
        join_names(names, sizeof names, enum_name_at, f, f->count);
        snprintf(expected, sizeof expected, "one of: %s", names);
        return type_error(path, expected, n);
    }
    const char *t = n->text;
    switch (type) {
    case CONFIG_TYPE_BOOL: {
        bool yes = !strcmp(t, "true") || !strcmp(t, "True") || !strcmp(t, "TRUE");
        bool no = !strcmp(t, "false") || !strcmp(t, "False") || !strcmp(t, "FALSE");
        if (!n->plain || (!yes && !no)) return type_error(path, type_names[type], n);
        *(bool *)dst = yes;
        return ADDC_OK;
    }
    case CONFIG_TYPE_INT: {
        int64_t v = 0;
        int r = n->plain ? parse_int_text(t, &v) : 1;
        if (r == 1) return type_error(path, type_names[type], n);
        if (r == 2 || v < f->min || v > f->max) return range_error(path, f, n, "the value");
        *(int64_t *)dst = v;
        return ADDC_OK;
    }
    case CONFIG_TYPE_FLOAT: {
        double v;
        bool of;
        if (!n->plain || !parse_float_text(t, &v, &of)) return type_error(path, type_names[type], n);
        if (of)
            return addc_error_set(ADDC_ERR_FORMAT, "%s: the value %s is too large for a double (%s)", path,
                                  got_text(n).s, pos_text(n->pos).s);
        *(double *)dst = v;
        return ADDC_OK;
    }
    case CONFIG_TYPE_STRING: {
        const char *s = node_is_null(n) ? "" : t;
        size_t len = strlen(s);
        if (len >= f->size)
            return addc_error_set(ADDC_ERR_FORMAT, "%s: the string is %zu bytes long, at most %zu fit (%s)", path,
                                  len, f->size - 1, pos_text(n->pos).s);
        memset(dst, 0, f->size);
        memcpy(dst, s, len);
        return ADDC_OK;
    }
    case CONFIG_TYPE_ENUM: {
        for (int32_t i = 0; i < f->count; i++)
            if (!strcmp(t, f->names[i])) {
                *(int32_t *)dst = i;
                return ADDC_OK;
            }
        char names[400], hint[120] = "";
        join_names(names, sizeof names, enum_name_at, f, f->count);
        const char *near = closest(t, enum_name_at, f, f->count);
        if (near) snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
        return addc_error_set(ADDC_ERR_FORMAT, "%s: %s is not one of: %s (%s)%s", path, got_text(n).s, names,
                              pos_text(n->pos).s, hint);
    }
    default: return addc_error_set(ADDC_ERR_INVALID, "%s: field type %d is not a scalar type", path, (int)type);
    }
}

static Status bind_list(const ConfigField *f, const ConfigNode *n, const char *path, void *obj) {
    char expected[64];
    snprintf(expected, sizeof expected, "a list of %ss, e.g. [a, b]",
             f->elem == CONFIG_TYPE_INT ? "int" : f->elem == CONFIG_TYPE_FLOAT ? "float" : "string");
    if (n->kind != NODE_SEQ) return type_error(path, expected, n);
    if (n->n > f->max_len)
        return addc_error_set(ADDC_ERR_FORMAT, "%s: the list has %lld items, at most %d are allowed (%s)", path,
                              (long long)n->n, (int)f->max_len, pos_text(n->pos).s);
    char *arr = (char *)obj + f->offset;
    memset(arr, 0, (size_t)f->max_len * f->size);
    for (int64_t i = 0; i < n->n; i++) {
        char ep[CONFIG_PATH_MAX + 24];
        snprintf(ep, sizeof ep, "%s[%lld]", path, (long long)i);
        TRY(bind_scalar(f, f->elem, n->items[i], ep, arr + (size_t)i * f->size));
    }
    *(int32_t *)((char *)obj + f->count_offset) = (int32_t)n->n;
    return ADDC_OK;
}

static Status schema_check(const ConfigSchema *s, int32_t depth) {
    const char *sn = s->name ? s->name : "?";
    if (depth > CONFIG_MAX_DEPTH) return addc_error_set(ADDC_ERR_INVALID, "config schema '%s' nests too deep", sn);
    if (s->count < 0 || (s->count && !s->fields))
        return addc_error_set(ADDC_ERR_INVALID, "config schema '%s' has no field table", sn);
    for (int32_t i = 0; i < s->count; i++) {
        const ConfigField *f = &s->fields[i];
        const char *bad = NULL;
        if (!f->name || !f->name[0]) bad = "a field without a name";
        else if ((unsigned)f->type >= CONFIG_TYPE_COUNT) bad = "an unknown type";
        else if (f->type == CONFIG_TYPE_STRING && !f->size) bad = "a string without room";
        else if (f->type == CONFIG_TYPE_ENUM && (f->count < 1 || !f->names)) bad = "an enum without names";
        else if (f->type == CONFIG_TYPE_INT && f->min > f->max) bad = "an empty int range";
        else if (f->type == CONFIG_TYPE_STRUCT && !f->sub) bad = "a struct without a schema";
        else if (f->type == CONFIG_TYPE_LIST &&
                 !((f->elem == CONFIG_TYPE_INT && f->size == sizeof(int64_t)) ||
                   (f->elem == CONFIG_TYPE_FLOAT && f->size == sizeof(double)) ||
                   (f->elem == CONFIG_TYPE_STRING && f->size > 0)))
            bad = "a list whose element type and size disagree (int64_t, double or char[N] arrays)";
        else if (f->type == CONFIG_TYPE_LIST && (f->max_len < 1 || f->min > f->max)) bad = "a list without room";
        for (int32_t j = 0; j < i && !bad; j++)
            if (!strcmp(s->fields[j].name, f->name)) bad = "a duplicate name";
        if (bad)
            return addc_error_set(ADDC_ERR_INVALID, "config schema '%s': field %d ('%s') is %s", sn, (int)i,
                                  f->name ? f->name : "", bad);
        if (f->type == CONFIG_TYPE_STRUCT) TRY(schema_check(f->sub, depth + 1));
    }
    return ADDC_OK;
}

static Status bind_struct(Config *scratch, const ConfigSchema *s, const ConfigNode *m, const char *path, void *obj);

/* The node for a field's default, built in `scratch`. */
static Status default_node(Config *scratch, const ConfigField *f, const char *path, const ConfigNode **out) {
    Pos pos = {"the schema default", 0, 0};
    const char *def = f->def;
    if (f->type == CONFIG_TYPE_LIST) {
        ConfigNode *n = NULL;
        Status st = parse_text(scratch, pos.src, true, def ? def : "[]", strlen(def ? def : "[]"), &n);
        if (st) return addc_error_context(ADDC_ERR_INVALID, "%s: bad default in the schema", path);
        *out = n;
        return n ? ADDC_OK : addc_error_set(ADDC_ERR_INVALID, "%s: empty list default in the schema", path);
    }
    bool plain = f->type != CONFIG_TYPE_STRING && f->type != CONFIG_TYPE_ENUM;
    if (!def) def = f->type == CONFIG_TYPE_BOOL ? "false" : f->type == CONFIG_TYPE_ENUM ? f->names[0] : plain ? "0" : "";
    *out = node_scalar(scratch, pos, def, plain);
    return *out ? ADDC_OK : ADDC_ERR_NOMEM;
}

static Status bind_field(Config *scratch, const ConfigField *f, const ConfigNode *n, const char *path, void *obj) {
    if (f->type == CONFIG_TYPE_STRUCT) {
        if (n && n->kind != NODE_MAP && !node_is_null(n)) {
            char expected[CONFIG_PATH_MAX + 40];
            snprintf(expected, sizeof expected, "a mapping (the keys of '%s')", path);
            return type_error(path, expected, n);
        }
        return bind_struct(scratch, f->sub, n && n->kind == NODE_MAP ? n : NULL, path, (char *)obj + f->offset);
    }
    bool is_default = !n;
    if (is_default) TRY(default_node(scratch, f, path, &n));
    Status st = f->type == CONFIG_TYPE_LIST ? bind_list(f, n, path, obj)
                                            : bind_scalar(f, f->type, n, path, (char *)obj + f->offset);
    if (st && is_default) return addc_error_context(ADDC_ERR_INVALID, "bad default in the schema");
    return st;
}

static Status bind_struct(Config *scratch, const ConfigSchema *s, const ConfigNode *m, const char *path, void *obj) {
    char fp[CONFIG_PATH_MAX];
    for (int64_t i = 0; m && i < m->n; i++) {
        const Entry *e = &m->entries[i];
        bool known = false;
        for (int32_t j = 0; j < s->count && !known; j++) known = !strcmp(s->fields[j].name, e->key);
        if (known) continue;
        path_join(fp, path, e->key);
        char hint[CONFIG_PATH_MAX + 400];
        const char *near = closest(e->key, field_name_at, s, s->count);
        if (near) {
            char np[CONFIG_PATH_MAX];
            path_join(np, path, near);
            snprintf(hint, sizeof hint, "did you mean '%s'?", np);
        } else {
            char names[400];
            join_names(names, sizeof names, field_name_at, s, s->count);
            snprintf(hint, sizeof hint, "the keys %s%s%s are: %s", path[0] ? "under '" : "at the top level",
                     path, path[0] ? "'" : "", names);
        }
        return addc_error_set(ADDC_ERR_FORMAT, "%s: unknown key (%s); %s%s", fp, pos_text(e->pos).s, hint,
                              strchr(e->key, '.') ? " (in a file, nest the keys of a dotted path as mappings)" : "");
    }
    for (int32_t j = 0; j < s->count; j++) {
        const ConfigField *f = &s->fields[j];
        const Entry *e = m ? map_find(m, f->name) : NULL;
        path_join(fp, path, f->name);
        TRY(bind_field(scratch, f, e ? e->value : NULL, fp, obj));
    }
    return ADDC_OK;
}

Status config_bind(const Config *c, const ConfigSchema *s, void *out) {
    TRY(schema_check(s, 0));
    Config scratch;
    config_init(&scratch);
    Status st = bind_struct(&scratch, s, c->root, "", out);
    config_free(&scratch);
    return st;
}

Status config_load(const ConfigSchema *s, void *out, const char *const *files, int32_t nfiles,
                   const char *const *overrides, int32_t noverrides) {
    Config c;
    config_init(&c);
    Status st = ADDC_OK;
    for (int32_t i = 0; i < nfiles && !st; i++) st = config_load_file(&c, files[i]);
    for (int32_t i = 0; i < noverrides && !st; i++) st = config_override(&c, overrides[i]);
    if (!st) st = config_bind(&c, s, out);
    config_free(&c);
    return st;
}

/* ---------------------------------------------------------------- writing */

typedef struct Sb {
    char *s;
    size_t n, cap;
    bool failed;
} Sb;

static void sb_printf(Sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(Sb *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->failed = true;
            return;
        }
        if (b->s && b->n + (size_t)w < b->cap) {
            b->n += (size_t)w;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->n + (size_t)w) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->failed = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

/* Length of the UTF-8 sequence at s and its code point; 0 when it is not valid UTF-8. */
static int utf8_decode(const unsigned char *s, uint32_t *cp) {
    int len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (!len) return 0;
    uint32_t v = len == 1 ? s[0] : s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min_cp[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

/* A double-quoted YAML string. Characters YAML does not allow raw (controls, C1, U+FFFE/F)
 * are escaped; text that is not UTF-8 cannot be written as YAML and is refused. */
static Status sb_quoted(Sb *b, const char *s, const char *path) {
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp;
        int len = utf8_decode(p, &cp);
        if (!len) return addc_error_set(ADDC_ERR_INVALID, "%s: the string is not valid UTF-8", path);
        if (cp == '"' || cp == '\\') sb_printf(b, "\\%c", (char)cp);
        else if (cp == '\n') sb_printf(b, "\\n");
        else if (cp == '\t') sb_printf(b, "\\t");
        else if (cp < 0x20 || cp == 0x7f) sb_printf(b, "\\x%02x", (unsigned)cp);
        else if ((cp >= 0x80 && cp <= 0x9f) || cp == 0xfeff || cp == 0xfffe || cp == 0xffff)
            sb_printf(b, "\\u%04x", (unsigned)cp);
        else sb_printf(b, "%.*s", len, (const char *)p);
        p += len;
    }
    sb_printf(b, "\"");
    return ADDC_OK;
}

/* The shortest decimal that reads back to the same double, always with a '.' or exponent. */
static void sb_float(Sb *b, double v) {
    if (isnan(v) || isinf(v)) {
        sb_printf(b, "%s", isnan(v) ? ".nan" : v < 0 ? "-.inf" : ".inf");
        return;
    }
    char t[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, v);
        if (strtod(t, NULL) == v) break;
    }
    sb_printf(b, "%s%s", t, strpbrk(t, ".e") ? "" : ".0");
}

static bool plain_safe(const char *s) {
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (; *s; s++)
        if (!key_char_ok(*s) && *s != '.') return false;
    return true;
}

static Status sb_scalar(Sb *b, const ConfigField *f, ConfigType type, const void *p, const char *path) {
    switch (type) {
    case CONFIG_TYPE_BOOL: sb_printf(b, "%s", *(const bool *)p ? "true" : "false"); break;
    case CONFIG_TYPE_INT: sb_printf(b, "%lld", (long long)*(const int64_t *)p); break;
    case CONFIG_TYPE_FLOAT: sb_float(b, *(const double *)p); break;
    case CONFIG_TYPE_STRING:
        if (!memchr(p, 0, f->size))
            return addc_error_set(ADDC_ERR_INVALID, "%s: the string is not NUL-terminated", path);
        return sb_quoted(b, p, path);
    case CONFIG_TYPE_ENUM: {
        int32_t v = *(const int32_t *)p;
        if (v < 0 || v >= f->count)
            return addc_error_set(ADDC_ERR_INVALID, "%s: enum value %d is not an index into its %d names", path,
                                  (int)v, (int)f->count);
        if (plain_safe(f->names[v])) sb_printf(b, "%s", f->names[v]);
        else return sb_quoted(b, f->names[v], path);
        break;
    }
    default: return addc_error_set(ADDC_ERR_INVALID, "%s: not a scalar type", path);
    }
    return ADDC_OK;
}

static void sb_help(Sb *b, const char *help) {
    if (!help || !help[0]) {
        sb_printf(b, "\n");
        return;
    }
    sb_printf(b, "  # ");
    for (const char *h = help; *h; h++) sb_printf(b, "%c", *h == '\n' || *h == '\r' ? ' ' : *h);
    sb_printf(b, "\n");
}

static Status format_struct(Sb *b, const ConfigSchema *s, const char *obj, int indent, const char *path) {
    for (int32_t i = 0; i < s->count; i++) {
        const ConfigField *f = &s->fields[i];
        char fp[CONFIG_PATH_MAX];
        path_join(fp, path, f->name);
        sb_printf(b, "%*s%s:", indent, "", f->name);
        if (f->type == CONFIG_TYPE_STRUCT) {
            if (!f->sub->count) sb_printf(b, " {}");
            sb_help(b, f->help);
            TRY(format_struct(b, f->sub, obj + f->offset, indent + 2, fp));
            continue;
        }
        sb_printf(b, " ");
        if (f->type == CONFIG_TYPE_LIST) {
            int32_t n = *(const int32_t *)(obj + f->count_offset);
            if (n < 0 || n > f->max_len)
                return addc_error_set(ADDC_ERR_INVALID, "%s: list count %d is outside [0, %d]", fp, (int)n,
                                      (int)f->max_len);
            sb_printf(b, "[");
            for (int32_t k = 0; k < n; k++) {
                if (k) sb_printf(b, ", ");
                TRY(sb_scalar(b, f, f->elem, obj + f->offset + (size_t)k * f->size, fp));
            }
            sb_printf(b, "]");
        } else {
            TRY(sb_scalar(b, f, f->type, obj + f->offset, fp));
        }
        sb_help(b, f->help);
    }
    return ADDC_OK;
}

char *config_format(const ConfigSchema *s, const void *obj) {
    if (schema_check(s, 0)) return NULL;
    Sb b = {0};
    sb_printf(&b, "# %s: every field, defaults included (written by addc core/config)\n", s->name ? s->name : "config");
    Status st = format_struct(&b, s, obj, 0, "");
    if (!st && b.failed) st = addc_error_set(ADDC_ERR_NOMEM, "out of memory formatting the config");
    if (st) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

Status config_write(const ConfigSchema *s, const void *obj, const char *path) {
    char *text = config_format(s, obj);
    if (!text) return addc_error_status() ? addc_error_status() : ADDC_ERR_NOMEM;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 8), *dir = malloc(plen + 2);
    Status st = ADDC_OK;
    if (!tmp || !dir) {
        st = addc_error_set(ADDC_ERR_NOMEM, "out of memory writing '%s'", path);
        goto out;
    }
    snprintf(tmp, plen + 8, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = addc_error_set(ADDC_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    size_t len = strlen(text);
    bool ok = fwrite(text, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = false, err = errno;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) err = errno;
        unlink(tmp);
        st = addc_error_set(ADDC_ERR_IO, "cannot write '%s': %s", path, strerror(err));
        goto out;
    }
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(dir, plen + 2, "%.*s", (int)(slash == path ? 1 : slash - path), path);
    else snprintf(dir, plen + 2, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0) st = addc_error_set(ADDC_ERR_IO, "cannot sync directory '%s': %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
out:
    free(text);
    free(tmp);
    free(dir);
    return st;
}

/* ---------------------------------------------------------------- equality */

static bool scalar_equal(const ConfigField *f, ConfigType type, const char *a, const char *b) {
    switch (type) {
    case CONFIG_TYPE_BOOL: return *(const bool *)a == *(const bool *)b;
    case CONFIG_TYPE_INT: return *(const int64_t *)a == *(const int64_t *)b;
    case CONFIG_TYPE_FLOAT: {
        double x, y;
        memcpy(&x, a, sizeof x);
        memcpy(&y, b, sizeof y);
        return (isnan(x) && isnan(y)) || !memcmp(&x, &y, sizeof x);
    }
    case CONFIG_TYPE_STRING: return !strncmp(a, b, f->size);
    case CONFIG_TYPE_ENUM: return *(const int32_t *)a == *(const int32_t *)b;
    default: return false;
    }
}

static bool struct_equal(const ConfigSchema *s, const char *a, const char *b) {
    for (int32_t i = 0; i < s->count; i++) {
        const ConfigField *f = &s->fields[i];
        if (f->type == CONFIG_TYPE_STRUCT) {
            if (!struct_equal(f->sub, a + f->offset, b + f->offset)) return false;
        } else if (f->type == CONFIG_TYPE_LIST) {
            int32_t na = *(const int32_t *)(a + f->count_offset), nb = *(const int32_t *)(b + f->count_offset);
            if (na != nb || na < 0 || na > f->max_len) return false;
            for (int32_t k = 0; k < na; k++)
                if (!scalar_equal(f, f->elem, a + f->offset + (size_t)k * f->size, b + f->offset + (size_t)k * f->size))
                    return false;
        } else if (!scalar_equal(f, f->type, a + f->offset, b + f->offset)) {
            return false;
        }
    }
    return true;
}

bool config_equal(const ConfigSchema *s, const void *a, const void *b) { return struct_equal(s, a, b); }
