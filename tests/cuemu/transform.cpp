// tests/cuemu/transform.cpp: the build-time source transform of the CUDA host emulator (cuemu).
//
// Usage: cuemu_transform IN.cu OUT.cpp. Rewrites the three things of CUDA C++ that macros cannot
// (tests/cuemu/include/cuda_runtime.h does the rest), keeping every line where it was so that
// compiler messages and __LINE__ point into the .cu file (a #line directive names it):
//   kern<T><<<grid, block[, smem[, stream]]>>>(args)
//       -> cuemu_launch("kern<T>", kern<T>, __FILE__, __LINE__, grid, block[, smem[, stream]])(args)
//   extern __shared__ T name[];       -> T *name = (T *)cuemu_dynamic_smem();
//   __launch_bounds__(N) kern(...) {  -> kern(...) { cuemu_launch_bounds(N);
// Comments, string and character literals are copied untouched. Anything it cannot parse is an
// error naming the file and line (the build stops).
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

static std::string path;
static const std::string *src;

[[noreturn]] static void fail(size_t pos, const char *what) {
    int line = 1;
    for (size_t i = 0; i < pos && i < src->size(); i++) line += (*src)[i] == '\n';
    fprintf(stderr, "%s:%d: cuemu_transform: %s\n", path.c_str(), line, what);
    exit(1);
}

static bool ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

// End (one past) of the comment or literal starting at i, or i when none starts there.
static size_t skip_lexeme(const std::string &s, size_t i) {
    if (s.compare(i, 2, "//") == 0) {
        size_t e = s.find('\n', i);
        return e == std::string::npos ? s.size() : e;
    }
    if (s.compare(i, 2, "/*") == 0) {
        size_t e = s.find("*/", i + 2);
        if (e == std::string::npos) fail(i, "unterminated comment");
        return e + 2;
    }
    if (s[i] == '"' || s[i] == '\'') {
        char q = s[i];
        size_t j = i + 1;
        while (j < s.size() && s[j] != q) {
            if (s[j] == '\\') j++;
            if (s[j] == '\n') fail(i, "unterminated literal");
            j++;
        }
        if (j >= s.size()) fail(i, "unterminated literal");
        return j + 1;
    }
    return i;
}

// Position of the bracket closing the one at `open` (one of ( [ {), skipping literals and comments.
static size_t match_close(const std::string &s, size_t open) {
    int depth = 0;
    for (size_t i = open; i < s.size();) {
        size_t e = skip_lexeme(s, i);
        if (e != i) {
            i = e;
            continue;
        }
        char c = s[i];
        if (c == '(' || c == '[' || c == '{') depth++;
        if (c == ')' || c == ']' || c == '}') {
            if (--depth == 0) return i;
        }
        i++;
    }
    fail(open, "unbalanced bracket");
}

static std::string collapse_ws(const std::string &t) {
    std::string r;
    for (char c : t) {
        if (isspace((unsigned char)c)) {
            if (!r.empty() && r.back() != ' ') r += ' ';
        } else {
            r += c;
        }
    }
    while (!r.empty() && r.back() == ' ') r.pop_back();
    return r;
}

// out ends with the kernel expression of a launch: `name`, `a::name` or `name<...>`, maybe
// followed by white space. Returns where it starts in out.
static size_t kernel_start(const std::string &out, size_t pos_in_src) {
    size_t k = out.size();
    while (k > 0 && isspace((unsigned char)out[k - 1])) k--;
    if (k > 0 && out[k - 1] == '>') { // template arguments
        int depth = 0;
        while (k > 0) {
            char c = out[k - 1];
            if (c == '>') depth++;
            if (c == '<') depth--;
            k--;
            if (depth == 0) break;
        }
        if (depth != 0) fail(pos_in_src, "launch: unbalanced template arguments before <<<");
        while (k > 0 && isspace((unsigned char)out[k - 1])) k--;
    }
    size_t e = k;
    for (;;) {
        while (k > 0 && ident_char(out[k - 1])) k--;
        if (k >= 2 && out[k - 1] == ':' && out[k - 2] == ':') {
            k -= 2;
            continue;
        }
        break;
    }
    if (k == e) fail(pos_in_src, "launch: no kernel name before <<<");
    return k;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: cuemu_transform IN.cu OUT.cpp\n");
        return 2;
    }
    path = argv[1];
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) {
        fprintf(stderr, "cuemu_transform: cannot read %s\n", argv[1]);
        return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string s = ss.str();
    src = &s;
    std::string out = "#include <cuda_runtime.h>\n#line 1 \"" + path + "\"\n";
    int launches = 0;
    for (size_t i = 0; i < s.size();) {
        size_t e = skip_lexeme(s, i);
        if (e != i) {
            out.append(s, i, e - i);
            i = e;
            continue;
        }
        if (s.compare(i, 3, "<<<") == 0) {
            size_t k = kernel_start(out, i);
            std::string kern = out.substr(k);
            size_t j = i + 3;
            int depth = 0;
            while (j < s.size() && !(depth == 0 && s.compare(j, 3, ">>>") == 0)) {
                size_t le = skip_lexeme(s, j);
                if (le != j) {
                    j = le;
                    continue;
                }
                if (s[j] == '(' || s[j] == '[' || s[j] == '{') depth++;
                if (s[j] == ')' || s[j] == ']' || s[j] == '}') depth--;
                if (s[j] == ';') fail(i, "launch: no >>> before ';'");
                j++;
            }
            if (j >= s.size()) fail(i, "launch: no >>>");
            std::string cfg = s.substr(i + 3, j - i - 3);
            size_t a = j + 3;
            while (a < s.size() && isspace((unsigned char)s[a])) a++;
            if (a >= s.size() || s[a] != '(') fail(i, "launch: no argument list after >>>");
            out.resize(k);
            out += "cuemu_launch(\"" + collapse_ws(kern) + "\", " + kern + ", __FILE__, __LINE__, " + cfg + ")";
            i = j + 3;
            launches++;
            continue;
        }
        if (s.compare(i, 17, "extern __shared__") == 0) {
            size_t semi = s.find(';', i);
            if (semi == std::string::npos) fail(i, "extern __shared__: no ';'");
            std::string decl = s.substr(i + 17, semi - i - 17);
            size_t br = decl.find('[');
            if (br == std::string::npos || decl.find(']', br) == std::string::npos)
                fail(i, "extern __shared__: expected `T name[]`");
            size_t ne = br;
            while (ne > 0 && isspace((unsigned char)decl[ne - 1])) ne--;
            size_t nb = ne;
            while (nb > 0 && ident_char(decl[nb - 1])) nb--;
            if (nb == ne) fail(i, "extern __shared__: no name");
            std::string name = decl.substr(nb, ne - nb), type = decl.substr(0, nb);
            size_t al = type.find("__align__");
            if (al != std::string::npos) { // alignment: the dynamic buffer is 256-byte aligned anyway
                size_t op = type.find('(', al);
                if (op == std::string::npos) fail(i, "extern __shared__: bad __align__");
                type.erase(al, match_close(type, op) + 1 - al);
            }
            type = collapse_ws(type);
            if (type.empty()) fail(i, "extern __shared__: no type");
            out += type + " *" + name + " = (" + type + " *)cuemu_dynamic_smem();";
            i = semi + 1;
            continue;
        }
        if (s.compare(i, 17, "__launch_bounds__") == 0 && (i == 0 || !ident_char(s[i - 1]))) {
            size_t op = i + 17;
            while (op < s.size() && isspace((unsigned char)s[op])) op++;
            if (op >= s.size() || s[op] != '(') fail(i, "__launch_bounds__: no '('");
            size_t cp = match_close(s, op);
            std::string args = s.substr(op + 1, cp - op - 1);
            // the first argument (max threads per block) is checked at the top of the body
            int d = 0;
            size_t comma = std::string::npos;
            for (size_t q = 0; q < args.size(); q++) {
                if (args[q] == '(') d++;
                if (args[q] == ')') d--;
                if (args[q] == ',' && d == 0) {
                    comma = q;
                    break;
                }
            }
            std::string maxt = comma == std::string::npos ? args : args.substr(0, comma);
            // the parameter list of the function that follows, then its body
            size_t pl = s.find('(', cp + 1);
            if (pl == std::string::npos) fail(i, "__launch_bounds__: no function after it");
            size_t pe = match_close(s, pl);
            size_t body = pe + 1;
            while (body < s.size() && isspace((unsigned char)s[body])) body++;
            if (body >= s.size() || s[body] != '{') fail(i, "__launch_bounds__: no function body");
            // copy the text up to the brace (lines kept), then the check
            std::string head = s.substr(cp + 1, body + 1 - (cp + 1));
            out += head;
            out += " cuemu_launch_bounds((unsigned)(" + collapse_ws(maxt) + "));";
            i = body + 1;
            continue;
        }
        out += s[i];
        i++;
    }
    (void)launches;
    std::ofstream o(argv[2], std::ios::binary);
    o << out;
    if (!o) {
        fprintf(stderr, "cuemu_transform: cannot write %s\n", argv[2]);
        return 1;
    }
    return 0;
}
