//! Huffman trees exactly as zlib builds them: its heap (with its tie-breaking on
//! frequency, then depth), its length limiting (`gen_bitlen`) and its canonical codes.

use super::*;

/// A Huffman tree as zlib builds it: code lengths per symbol. Codes are derived on
/// demand ([`Tree::codes`]).
pub(super) struct Tree {
    pub(super) len: [u8; L_CODES],
    /// One bit per leaf symbol (the symbols with a non-zero length).
    pub(super) leaves: [u64; L_CODES.div_ceil(64)],
    /// Code count per length, as `gen_bitlen` left it.
    bl_count: [u16; MAX_BITS + 1],
    /// Largest symbol with a non-zero frequency (after zlib's padding to two codes).
    pub(super) max_code: usize,
}

impl Tree {
    /// zlib's `gen_codes`: the canonical, bit-reversed codes (only needed when the tree
    /// is actually sent).
    pub(super) fn codes(&self) -> [u16; L_CODES] {
        canonical_codes(&self.len, self.max_code + 1, &self.bl_count)
    }
}

/// Static properties of one of the three alphabets.
pub(super) struct TreeKind {
    /// Code lengths in the fixed code, for zlib's fixed-block estimate.
    static_len: Option<&'static [u8]>,
    /// Extra bits sent after each symbol, one entry per symbol.
    extra_bits: &'static [u8],
    max_length: usize,
}

pub(super) const LITERAL_TREE: TreeKind = TreeKind {
    static_len: Some(&FIXED_LIT_LEN),
    extra_bits: &L_EXTRA_BITS,
    max_length: MAX_BITS,
};
pub(super) const DISTANCE_TREE: TreeKind = TreeKind {
    static_len: Some(&FIXED_DIST_LEN),
    extra_bits: &EXTRA_DBITS,
    max_length: MAX_BITS,
};
pub(super) const BIT_LENGTH_TREE: TreeKind = TreeKind {
    static_len: None,
    extra_bits: &EXTRA_BLBITS,
    max_length: MAX_BL_BITS,
};

/// Extra bits per literal/length symbol (0 for literals and end-of-block).
const L_EXTRA_BITS: [u8; L_CODES] = {
    let mut xbits = [0u8; L_CODES];
    let mut code = 0;
    while code < LENGTH_CODES {
        xbits[LITERALS + 1 + code] = EXTRA_LBITS[code];
        code += 1;
    }
    xbits
};

/// Running bit-cost estimates, as zlib keeps them (`opt_len` / `static_len`).
#[derive(Default)]
pub(super) struct Cost {
    pub(super) dynamic: i64,
    pub(super) fixed: i64,
}

/// Working arrays of the tree construction, reused across trees and calls without
/// clearing: every slot is written before it is read within one `build_tree`.
pub(super) struct TreeScratch {
    /// `heap[1..=heap_len]` is zlib's priority queue (`heap[0]` unused) of
    /// [`heap_entry`] values; `heap[heap_len + 1]` always holds [`SENTINEL`].
    pub(super) heap: [u64; HEAP_ARRAY],
    /// zlib keeps the nodes leaving the queue in `heap[heap_max..HEAP_SIZE]`, filled
    /// downwards; `order[order_start..]` holds the same sequence.
    pub(super) order: [u16; HEAP_SIZE],
    /// Parent of each node.
    pub(super) dad: [u16; HEAP_SIZE],
}

/// Heap entry: zlib's ordering key (frequency, then depth) above the node number, so
/// comparing needs no indirect lookups. Frequencies stay below 2^15 (at most 16 002
/// symbols per block) and depths are zlib's `uch`, so the fields never overlap.
fn heap_entry(freq: u32, depth: u8, node: usize) -> u64 {
    (u64::from(freq) << 24) | (u64::from(depth) << 16) | node as u64
}

/// Room for the 1-based heap of up to `L_CODES` entries plus the sentinel after it.
pub(super) const HEAP_ARRAY: usize = L_CODES + 2;

/// Ranks after every real entry, so a missing right child is never preferred.
const SENTINEL: u64 = u64::MAX;

/// zlib's `smaller(a, b)`: lower frequency first, then lower-or-equal depth; the same
/// as `a >> 16 <= b >> 16`.
fn smaller(a: u64, b: u64) -> bool {
    a <= b | 0xffff
}

fn entry_node(entry: u64) -> usize {
    usize::from(entry as u16)
}

/// zlib's `build_tree` + `gen_bitlen` (codes come later from [`Tree::codes`]).
/// `freq` has one entry per symbol, `used` one bit per symbol with a non-zero frequency;
/// zlib's dummy codes get frequency 1 written into `freq`.
pub(super) fn build_tree(
    freq: &mut [u32],
    used: &[u64],
    kind: &TreeKind,
    cost: &mut Cost,
    scratch: &mut TreeScratch,
) -> Tree {
    let elems = freq.len();
    let TreeScratch { heap, order, dad } = scratch;
    // The queued symbols (including zlib's dummies), ascending, and the code length of
    // each internal node (indexed by node minus `elems`).
    let (mut leaves, mut node_len) = ([0u16; L_CODES], [0u8; L_CODES]);
    let mut heap_len = 0usize;
    let mut max_code: isize = -1;

    // Queue the used symbols in ascending order, as zlib does.
    for (base, &used) in used.iter().enumerate() {
        let mut used = used;
        while used != 0 {
            let n = base * 64 + used.trailing_zeros() as usize;
            used &= used - 1;
            heap_len += 1;
            heap[heap_len] = heap_entry(freq[n], 0, n);
            max_code = n as isize;
        }
    }
    // Deflate needs at least two codes; zlib pads with dummy symbols of frequency 1.
    let mut dummies = 0;
    while heap_len < 2 {
        let node = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        heap_len += 1;
        heap[heap_len] = heap_entry(1, 0, node);
        freq[node] = 1;
        dummies += 1;
        if let Some(stree) = kind.static_len {
            cost.fixed -= i64::from(stree[node]);
        }
    }
    let max_code = max_code as usize;
    let leaf_count = heap_len;
    for (leaf, &entry) in leaves.iter_mut().zip(&heap[1..=heap_len]) {
        *leaf = entry_node(entry) as u16;
    }
    heap[heap_len + 1] = SENTINEL;

    let mut root = heap[1];
    for k in (1..=heap_len / 2).rev() {
        root = down_heap(heap, heap_len, k, heap[k]);
    }

    // zlib's loop, with the root kept in a register: pop it (the last entry moves to
    // the root and sinks), read the new root, replace it with the merged node and sink.
    let mut order_start = HEAP_SIZE;
    let mut node = elems;
    loop {
        let n = root;
        let last = heap[heap_len];
        heap[heap_len] = SENTINEL;
        heap_len -= 1;
        let m = down_heap(heap, heap_len, 1, last);

        order_start -= 2;
        order[order_start + 1] = entry_node(n) as u16;
        order[order_start] = entry_node(m) as u16;

        let freq_sum = (n >> 24) as u32 + (m >> 24) as u32;
        let depth = ((n >> 16) as u8).max((m >> 16) as u8).wrapping_add(1);
        dad[entry_node(n)] = node as u16;
        dad[entry_node(m)] = node as u16;

        root = down_heap(heap, heap_len, 1, heap_entry(freq_sum, depth, node));
        node += 1;
        if heap_len < 2 {
            break;
        }
    }
    order_start -= 1;
    order[order_start] = entry_node(root) as u16;

    // gen_bitlen: every node's length is its parent's plus one, clamped to max_length,
    // with each clamp counted as overflow. zlib walks its heap tail (parents first);
    // any parents-first order gives the same lengths and counts. Here: the internal
    // nodes newest first (a parent is always newer than its children, the root is the
    // newest, with length 0), then the leaves, which no longer depend on each other.
    let max_length = kind.max_length;
    let root = node - 1;
    let mut overflow: i32 = 0;
    node_len[root - elems] = 0;
    for n in (elems..root).rev() {
        let bits = node_len[usize::from(dad[n]) - elems] + 1;
        overflow += i32::from(usize::from(bits) > max_length);
        node_len[n - elems] = bits.min(max_length as u8);
    }
    let leaves = &leaves[..leaf_count];
    let mut len = [0u8; L_CODES];
    let mut leaf_bits = [0u64; L_CODES.div_ceil(64)];
    let mut bl_count = [0u16; MAX_BITS + 1];
    for &n in leaves {
        let n = usize::from(n);
        let bits = node_len[usize::from(dad[n]) - elems] + 1;
        overflow += i32::from(usize::from(bits) > max_length);
        let bits = bits.min(max_length as u8);
        len[n] = bits;
        leaf_bits[n / 64] |= 1 << (n % 64);
        bl_count[usize::from(bits)] += 1;
    }
    if overflow > 0 {
        loop {
            let mut bits = max_length - 1;
            while bl_count[bits] == 0 {
                bits -= 1;
            }
            bl_count[bits] -= 1;
            bl_count[bits + 1] += 2;
            bl_count[max_length] -= 1;
            overflow -= 2;
            if overflow <= 0 {
                break;
            }
        }
        // Hand the corrected lengths out again, walking zlib's heap tail from its end.
        let order = &order[order_start..];
        let mut h = order.len();
        for bits in (1..=max_length).rev() {
            let mut remaining = bl_count[bits];
            while remaining != 0 {
                h -= 1;
                let m = usize::from(order[h]);
                if m > max_code {
                    continue;
                }
                len[m] = bits as u8;
                remaining -= 1;
            }
        }
    }

    // zlib accumulates both estimates leaf by leaf (and corrects `opt_len` whenever the
    // overflow pass changes a length); the totals are these sums over the final
    // lengths, where each dummy's frequency 1 was cancelled in advance.
    let (mut dynamic, mut fixed) = (0i64, 0i64);
    for &n in leaves {
        let n = usize::from(n);
        let f = i64::from(freq[n]);
        let xbits = i64::from(kind.extra_bits[n]);
        dynamic += f * (i64::from(len[n]) + xbits);
        if let Some(stree) = kind.static_len {
            fixed += f * (i64::from(stree[n]) + xbits);
        }
    }
    cost.dynamic += dynamic - dummies;
    cost.fixed += fixed;
    Tree {
        len,
        leaves: leaf_bits,
        bl_count,
        max_code,
    }
}

/// zlib's `pqdownheap`: sinks `v` from position `start` of the 1-based heap
/// `heap[1..=heap_len]` (whose slot `start` it replaces) and returns what ends up at
/// `start`. [`SENTINEL`] at `heap_len + 1` lets the smaller-child choice go without a
/// bounds test, as a conditional move.
fn down_heap(heap: &mut [u64; HEAP_ARRAY], heap_len: usize, start: usize, v: u64) -> u64 {
    let mut k = start;
    let mut j = k << 1;
    let mut top = v;
    while j <= heap_len {
        let (left, right) = (heap[j], heap[j + 1]);
        let (child, at) = if smaller(right, left) {
            (right, j + 1)
        } else {
            (left, j)
        };
        if smaller(v, child) {
            break;
        }
        heap[k] = child;
        if k == start {
            top = child;
        }
        k = at;
        j = at << 1;
    }
    heap[k] = v;
    top
}

/// zlib's `gen_codes`: canonical, bit-reversed codes for the first `count` lengths
/// (later entries get code 0) from the length counts.
pub(super) const fn canonical_codes<const N: usize>(
    len: &[u8; N],
    count: usize,
    bl_count: &[u16; MAX_BITS + 1],
) -> [u16; N] {
    let mut next_code = [0u16; MAX_BITS + 1];
    let mut code = 0u16;
    let mut bits = 1;
    while bits <= MAX_BITS {
        code = (code.wrapping_add(bl_count[bits - 1])) << 1;
        next_code[bits] = code;
        bits += 1;
    }
    let mut codes = [0u16; N];
    let mut n = 0;
    while n < count {
        let l = len[n] as usize;
        if l != 0 {
            codes[n] = next_code[l].reverse_bits() >> (16 - l);
            next_code[l] += 1;
        }
        n += 1;
    }
    codes
}
