/* The op registry: the name table is in enum order, names are unique, and every op has a
 * CPU forward and backward, and a create-graph backward exactly when flagged OPF_GRAPH. */
#include <string.h>

#include "tests/test_util.h"

int main(void) {
    for (int i = 0; i < OP_COUNT; i++) {
        CHECK(op_info[i].op == (OpKind)i, "op_info[%d] is %s (enum %d): table out of order", i, op_info[i].name,
              (int)op_info[i].op);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(op_info[i].name, op_info[j].name) != 0, "op name '%s' used twice", op_info[i].name);
        if (i == OP_CHECKPOINT) continue; /* autograd.c runs regions itself */
        const OpImpl *impl = backend_cpu.ops[i];
        CHECK(impl && impl->fwd, "op %s has no CPU forward", op_info[i].name);
        CHECK(impl && impl->bwd, "op %s has no CPU backward", op_info[i].name);
        bool graph = (op_info[i].flags & OPF_GRAPH) != 0;
        CHECK(impl && (impl->bwd_graph != NULL) == graph, "op %s: create-graph backward %s but flag %s",
              op_info[i].name, impl && impl->bwd_graph ? "present" : "absent", graph ? "set" : "unset");
    }
    CHECK(strcmp(op_name(OP_COUNT), "?") == 0, "op_name out of range");
    return test_main_end("test_op_table");
}
