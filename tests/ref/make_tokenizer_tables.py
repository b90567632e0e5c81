"""tests/ref/make_tokenizer_tables.py: generates nn/tokenizer_tables.c, the Unicode and text-cleaning data of the
CLIP tokenizer in C (nn/tokenizer.c), from the libraries open_clip's SimpleTokenizer runs on:

  letters, numbers     \\p{L} and \\p{N} as the `regex` module matches them (the pre-tokeniser's classes)
  spaces               str.isspace (str.split / str.strip)
  lower                str.lower: single code point mappings as (lo, hi, stride, delta) runs; U+0130 and the
                       final-sigma rule are handled in C; cased / case-ignorable for that rule
  nfc                  unicodedata canonical decompositions, combining classes and primary composites (NFC)
  ftfy                 ftfy.fix_text's per-character fixes composed: C1 controls as Windows-1252, Latin
                       ligatures, character width, curly quotes, removed control characters
  html                 html.entities.html5, ftfy's all-caps entities and html.unescape's invalid character
                       references

Run: python3 tests/ref/make_tokenizer_tables.py (rewrites nn/tokenizer_tables.c)."""

import html
import html.entities
import os
import unicodedata

import ftfy.fixes as fixes
import regex
from ftfy import chardata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "nn", "tokenizer_tables.c")
ALL = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]


def ranges(cps):
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def case_runs(pairs):
    """(cp, lower) pairs -> (lo, hi, stride, delta) runs covering exactly the pairs"""
    runs, i = [], 0
    while i < len(pairs):
        cp, lo = pairs[i]
        delta, stride, j = lo - cp, 1, i + 1
        if j < len(pairs) and pairs[j][1] - pairs[j][0] == delta and pairs[j][0] - cp in (1, 2):
            stride = pairs[j][0] - cp
            while j < len(pairs) and pairs[j][1] - pairs[j][0] == delta and pairs[j][0] - pairs[j - 1][0] == stride:
                j += 1
        runs.append((cp, pairs[j - 1][0], stride, delta))
        i = j
    return runs


def c_str(s):
    out = []
    for ch in s.encode("utf-8"):
        out.append(chr(ch) if 32 <= ch < 127 and chr(ch) not in '"\\?' else f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def emit_ranges(f, name, rs):
    f.write(f"const UniRange {name}[] = {{\n")
    for i in range(0, len(rs), 6):
        f.write("    " + " ".join(f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs[i:i + 6]) + "\n")
    f.write(f"}};\nconst int32_t {name}_n = {len(rs)};\n\n")


def ftfy_char(c):
    for fix in (fixes.fix_c1_controls, fixes.fix_latin_ligatures, fixes.fix_character_width, fixes.uncurl_quotes,
                fixes.remove_control_chars):
        c = fix(c)
    return c


def main():
    L, N = regex.compile(r"\p{L}"), regex.compile(r"\p{N}")
    letters = ranges([cp for cp in ALL if L.match(chr(cp))])
    numbers = ranges([cp for cp in ALL if N.match(chr(cp))])
    spaces = ranges([cp for cp in ALL if chr(cp).isspace()])
    lower_pairs, multi = [], []
    for cp in ALL:
        lo = chr(cp).lower()
        if lo != chr(cp):
            (lower_pairs.append((cp, ord(lo))) if len(lo) == 1 else multi.append((cp, lo)))
    assert [m[0] for m in multi] == [0x130], multi  # İ -> i + combining dot above, handled in C
    lower = case_runs(lower_pairs)
    ignorable_cat = {"Mn", "Me", "Cf", "Lm", "Sk"}
    ignorable_extra = [0x27, 0x2E, 0x3A, 0x5E, 0x60, 0xA8, 0xAD, 0xAF, 0xB4, 0xB7, 0xB8, 0x2018, 0x2019, 0x2024,
                       0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A]
    cased = ranges([cp for cp in ALL if chr(cp).isupper() or chr(cp).islower() or
                    unicodedata.category(chr(cp)) == "Lt"])
    ignorable = ranges(sorted({cp for cp in ALL if unicodedata.category(chr(cp)) in ignorable_cat} |
                              set(ignorable_extra)))

    decomp, ccc, comp = [], [], []
    for cp in ALL:
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            parts = [int(x, 16) for x in d.split()]
            assert 1 <= len(parts) <= 2
            decomp.append((cp, parts[0], parts[1] if len(parts) == 2 else 0))
            if len(parts) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp):
                comp.append((parts[0], parts[1], cp))
        k = unicodedata.combining(chr(cp))
        if k:
            if ccc and ccc[-1][1] == cp - 1 and ccc[-1][2] == k:
                ccc[-1][1] = cp
            else:
                ccc.append([cp, cp, k])
    comp.sort()

    candidates = set(range(0x80, 0xA0)) | set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | \
        set(chardata.CONTROL_CHARS) | {0x2BC} | set(range(0x2018, 0x2020))
    ftfy_map = []
    for cp in sorted(candidates):
        out = ftfy_char(chr(cp))
        if out != chr(cp):
            assert len(out) <= 3, (cp, out)
            ftfy_map.append((cp, [ord(x) for x in out]))

    ents = sorted(html.entities.html5.items())
    upper = {}
    for name, char in html.entities.html5.items():  # ftfy's all-caps entities (chardata._build_html_entities)
        if name.endswith(";") and name == name.lower() and html.unescape("&" + name.upper()) == "&" + name.upper():
            upper[name.upper()] = char.upper()
    upper = sorted(upper.items())
    invalid_refs = sorted(html._invalid_charrefs.items())
    invalid_cps = sorted(html._invalid_codepoints)

    with open(OUT, "w") as f:
        f.write("/* nn/tokenizer_tables: GENERATED by tests/ref/make_tokenizer_tables.py from Python "
                f"{unicodedata.unidata_version} Unicode data,\n * the regex module {regex.__version__} and ftfy; "
                "do not edit. The data the CLIP tokenizer's text cleaning and\n * pre-tokenisation need "
                "(see nn/tokenizer_tables.h). */\n#include \"nn/tokenizer_tables.h\"\n\n")
        emit_ranges(f, "uni_letters", letters)
        emit_ranges(f, "uni_numbers", numbers)
        emit_ranges(f, "uni_spaces", spaces)
        emit_ranges(f, "uni_cased", cased)
        emit_ranges(f, "uni_case_ignorable", ignorable)
        f.write("const UniCaseRun uni_lower[] = {\n")
        for a, b, s, d in lower:
            f.write(f"    {{0x{a:X}, 0x{b:X}, {s}, {d}}},\n")
        f.write(f"}};\nconst int32_t uni_lower_n = {len(lower)};\n\n")
        f.write("const UniDecomp uni_decomp[] = {\n")
        for i in range(0, len(decomp), 4):
            f.write("    " + " ".join(f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in decomp[i:i + 4]) + "\n")
        f.write(f"}};\nconst int32_t uni_decomp_n = {len(decomp)};\n\n")
        f.write("const UniCcc uni_ccc[] = {\n")
        for i in range(0, len(ccc), 5):
            f.write("    " + " ".join(f"{{0x{a:X}, 0x{b:X}, {k}}}," for a, b, k in ccc[i:i + 5]) + "\n")
        f.write(f"}};\nconst int32_t uni_ccc_n = {len(ccc)};\n\n")
        f.write("const UniComp uni_comp[] = {\n")
        for i in range(0, len(comp), 4):
            f.write("    " + " ".join(f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in comp[i:i + 4]) + "\n")
        f.write(f"}};\nconst int32_t uni_comp_n = {len(comp)};\n\n")
        f.write("const UniMap uni_ftfy[] = {\n")
        for cp, out in ftfy_map:
            to = ", ".join(f"0x{x:X}" for x in out) if out else "0"
            f.write(f"    {{0x{cp:X}, {len(out)}, {{{to}}}}},\n")
        f.write(f"}};\nconst int32_t uni_ftfy_n = {len(ftfy_map)};\n\n")
        for table, items in (("html_entities", ents), ("ftfy_upper_entities", upper)):
            f.write(f"const HtmlEntity {table}[] = {{\n")
            for name, val in items:
                cps = [ord(x) for x in val]
                assert len(cps) <= 3
                f.write(f"    {{{c_str(name)}, {len(cps)}, {{{', '.join(f'0x{x:X}' for x in cps)}}}}},\n")
            f.write(f"}};\nconst int32_t {table}_n = {len(items)};\n\n")
        f.write("const UniMap html_invalid_charrefs[] = {\n")
        for num, val in invalid_refs:
            f.write(f"    {{0x{num:X}, 1, {{0x{ord(val):X}}}}},\n")
        f.write(f"}};\nconst int32_t html_invalid_charrefs_n = {len(invalid_refs)};\n\n")
        f.write("const uint32_t html_invalid_codepoints[] = {\n")
        for i in range(0, len(invalid_cps), 8):
            f.write("    " + " ".join(f"0x{x:X}," for x in invalid_cps[i:i + 8]) + "\n")
        f.write(f"}};\nconst int32_t html_invalid_codepoints_n = {len(invalid_cps)};\n")
    print(f"  {os.path.relpath(OUT, ROOT)}: {len(letters)} letter, {len(numbers)} number ranges, {len(lower)} lower runs, "
          f"{len(decomp)} decompositions, {len(comp)} compositions, {len(ftfy_map)} ftfy maps, {len(ents)} entities; "
          f"{os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
