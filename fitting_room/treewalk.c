/* Tree ensembles walked in C for fitting_room.tree_strategies' "native" strategy (loaded through ctypes by
 * fitting_room/treewalk.py; built by `make native`).
 *
 * Each node is one 16-byte record, so a step down a tree reads one cache line: a split's threshold, its left
 * child (the right one follows it), the column it tests and where a NaN goes; a leaf has left = -1 and its value
 * where a split keeps its threshold. A value above a threshold goes right, a NaN goes right where nan_right says
 * so, as scikit-learn's `x <= threshold` goes left.
 *
 * A request's row finds the trees cold in cache, and walking them one after the other waits for one memory read
 * per level. So trees go down in groups of up to GROUP, one level at a time for all of them: their reads overlap.
 * A group walks as many levels as its deepest tree; a leaf stays where it is.
 *
 * Sums add leaf values left to right, starting from the first tree's value, as numpy's cumulative sum does, so
 * they are bit for bit the same. Compiled without -ffast-math: NaN tests and the order of additions must stay
 * as written.
 */
#include <stddef.h>
#include <stdint.h>

#define GROUP 8

typedef ptrdiff_t index_t; /* numpy's intp */

typedef struct {
    double threshold; /* a leaf's value */
    int32_t left;     /* -1 at a leaf */
    uint16_t feature;
    uint8_t nan_right;
    uint8_t unused;
} node_t;

typedef struct {
    index_t n_trees;
    const node_t *nodes;
    const int32_t *roots; /* per tree */
    const int32_t *depth; /* per tree: levels from its root to its deepest leaf */
} forest_t;

/* Exit leaves of trees first .. first + count - 1 (count <= GROUP) for one row. */
static void walk_group(const forest_t *f, const double *row, index_t first, index_t count, int32_t *leaf) {
    int32_t levels = 0;
    for (index_t g = 0; g < count; g++) {
        leaf[g] = f->roots[first + g];
        levels = f->depth[first + g] > levels ? f->depth[first + g] : levels;
    }
    for (; levels > 0; levels--) {
        for (index_t g = 0; g < count; g++) {
            const node_t *node = f->nodes + leaf[g];
            double v = row[node->feature];
            int32_t child = node->left + ((v > node->threshold) | ((v != v) & node->nan_right));
            leaf[g] = node->left < 0 ? leaf[g] : child;
        }
    }
}

/* Exit leaf of every tree for each of n_rows rows (row-major, n_columns each, at least every column the trees
 * test): out is n_rows x n_trees. */
void treewalk_leaves(const forest_t *f, const double *x, index_t n_rows, index_t n_columns, index_t *out) {
    int32_t leaf[GROUP];
    for (index_t r = 0; r < n_rows; r++) {
        for (index_t first = 0; first < f->n_trees; first += GROUP) {
            index_t count = f->n_trees - first < GROUP ? f->n_trees - first : GROUP;
            walk_group(f, x + r * n_columns, first, count, leaf);
            for (index_t g = 0; g < count; g++) {
                out[r * f->n_trees + first + g] = leaf[g];
            }
        }
    }
}

/* For each row, the trees taken as n_outputs equal runs, each run's leaf values added left to right: out is
 * n_rows x n_outputs. */
void treewalk_sums(const forest_t *f, const double *x, index_t n_rows, index_t n_columns, index_t n_outputs,
                   double *out) {
    int32_t leaf[GROUP];
    index_t run = f->n_trees / n_outputs;
    for (index_t r = 0; r < n_rows; r++) {
        for (index_t o = 0; o < n_outputs; o++) {
            double sum = 0.0;
            for (index_t first = o * run; first < (o + 1) * run; first += GROUP) {
                index_t count = (o + 1) * run - first < GROUP ? (o + 1) * run - first : GROUP;
                walk_group(f, x + r * n_columns, first, count, leaf);
                for (index_t g = 0; g < count; g++) {
                    double value = f->nodes[leaf[g]].threshold;
                    sum = first + g == o * run ? value : sum + value;
                }
            }
            out[r * n_outputs + o] = sum;
        }
    }
}

/* Layout of node_t and forest_t and the functions' arguments; treewalk.py refuses a library built for another. */
int treewalk_abi(void) { return 3; }
