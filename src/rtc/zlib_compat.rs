//! Reproduces, bit for bit, what C zlib's `compress` produces at its default level (6)
//! with the default window (32 KiB) and memory level (8), for inputs small enough to
//! fit one block without the window ever sliding. Other zlib implementations
//! (miniz_oxide, zlib-rs, Go's compress/flate) emit different — equally valid — bytes,
//! so this is what makes our tokens identical to the ones Agora's Python, Java, Node.js
//! and PHP builders produce.
//!
//! The algorithm: lazy-matching LZ77 over a 3-byte rolling hash with hash chains (chain
//! limit 128, cut to 32 once a match of 8 is in hand, lazy evaluation below 16, stop at
//! 128), then one final block that is stored, fixed-Huffman or dynamic-Huffman,
//! whichever zlib's own size estimate picks, with Huffman trees built by zlib's
//! heap-based construction (including its tie-breaking and length-limiting rules).
//!
//! # Performance notes
//!
//! This runs once per issued token, so it avoids per-call heap work: the large tables
//! (hash heads, chain links, the padded window and the symbol buffer) live in a
//! per-thread [`Scratch`] that is reused, the Huffman construction works on fixed-size
//! stack arrays with the heap ordering key packed into one integer, the static tables
//! are compile-time constants, and bits are written through a 64-bit accumulator. None
//! of this changes a decision zlib makes, so the output bytes are unchanged.

use std::cell::Cell;

/// Inputs up to this length are compressed exactly like C zlib; the limit keeps the
/// whole input within one block and inside the first window (no sliding).
pub(crate) const MAX_INPUT: usize = 16_000;

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const WINDOW_SIZE: usize = 1 << 15;
const MIN_LOOKAHEAD: usize = MAX_MATCH + MIN_MATCH + 1;
const MAX_DIST: usize = WINDOW_SIZE - MIN_LOOKAHEAD;
const HASH_SIZE: usize = 1 << 15;
const HASH_MASK: usize = HASH_SIZE - 1;
const HASH_SHIFT: u32 = 5;
/// Level 6 tuning: shorten the chain search once a match this long is in hand.
const GOOD_LENGTH: usize = 8;
/// Level 6 tuning: do not look for a better match once one this long is in hand.
const MAX_LAZY: usize = 16;
/// Level 6 tuning: stop searching as soon as a match this long is found.
const NICE_LENGTH: usize = 128;
/// Level 6 tuning: how many chain entries to examine at most.
const MAX_CHAIN: usize = 128;
/// Three-byte matches further back than this are not worth it.
const TOO_FAR: usize = 4096;
/// Zero bytes kept after the input: match extension reads up to `MAX_MATCH` bytes past
/// the current position, and zlib's window is zero there.
const WINDOW_PAD: usize = MAX_MATCH + 1;

const LITERALS: usize = 256;
const END_BLOCK: usize = 256;
const LENGTH_CODES: usize = 29;
const L_CODES: usize = LITERALS + 1 + LENGTH_CODES;
const D_CODES: usize = 30;
const BL_CODES: usize = 19;
const MAX_BITS: usize = 15;
const MAX_BL_BITS: usize = 7;
const HEAP_SIZE: usize = 2 * L_CODES + 1;
const REP_3_6: usize = 16;
const REPZ_3_10: usize = 17;
const REPZ_11_138: usize = 18;

/// Extra bits of each length code (RFC 1951, 3.2.5).
const EXTRA_LBITS: [u8; LENGTH_CODES] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Extra bits of each distance code (RFC 1951, 3.2.5).
const EXTRA_DBITS: [u8; D_CODES] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Extra bits of the code-length alphabet (RFC 1951, 3.2.7).
const EXTRA_BLBITS: [u8; BL_CODES] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];
/// Transmission order of the code-length code lengths (RFC 1951, 3.2.7).
const BL_ORDER: [usize; BL_CODES] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Match length minus 3 → length code (0..29), and each code's first length minus 3
/// (zlib's `_length_code` / `base_length`, except that code 28 gets its true base 255
/// instead of zlib's unused 0, so its — zero-bit — extra value is 0).
const LENGTH_TABLES: ([u8; 256], [u8; LENGTH_CODES]) = {
    let mut length_code = [0u8; 256];
    let mut base_length = [0u8; LENGTH_CODES];
    let mut length = 0usize;
    let mut code = 0;
    while code < LENGTH_CODES - 1 {
        base_length[code] = length as u8;
        let mut i = 0;
        while i < 1 << EXTRA_LBITS[code] {
            length_code[length] = code as u8;
            length += 1;
            i += 1;
        }
        code += 1;
    }
    // Length 258 has its own code (28, no extra bits), overriding the last slot of 27.
    length_code[length - 1] = (LENGTH_CODES - 1) as u8;
    base_length[LENGTH_CODES - 1] = (length - 1) as u8;
    (length_code, base_length)
};
const LENGTH_CODE: [u8; 256] = LENGTH_TABLES.0;
const BASE_LENGTH: [u8; LENGTH_CODES] = LENGTH_TABLES.1;

/// Distance minus 1 → distance code (first 256 entries direct, the rest by `>> 7`), and
/// each code's first distance minus 1 (zlib's `_dist_code` / `base_dist`).
const DIST_TABLES: ([u8; 512], [u16; D_CODES]) = {
    let mut dist_code = [0u8; 512];
    let mut base_dist = [0u16; D_CODES];
    let mut dist = 0usize;
    let mut code = 0;
    while code < 16 {
        base_dist[code] = dist as u16;
        let mut i = 0;
        while i < 1 << EXTRA_DBITS[code] {
            dist_code[dist] = code as u8;
            dist += 1;
            i += 1;
        }
        code += 1;
    }
    dist >>= 7;
    while code < D_CODES {
        base_dist[code] = (dist << 7) as u16;
        let mut i = 0;
        while i < 1 << (EXTRA_DBITS[code] - 7) {
            dist_code[256 + dist] = code as u8;
            dist += 1;
            i += 1;
        }
        code += 1;
    }
    (dist_code, base_dist)
};
const DIST_CODE: [u8; 512] = DIST_TABLES.0;
const BASE_DIST: [u16; D_CODES] = DIST_TABLES.1;

/// Distance code of a distance already reduced by one (zlib's `d_code`).
fn d_code(dist_minus_one: usize) -> usize {
    if dist_minus_one < 256 {
        usize::from(DIST_CODE[dist_minus_one])
    } else {
        usize::from(DIST_CODE[256 + ((dist_minus_one >> 7) & 0xff)])
    }
}

/// Code lengths of the fixed literal/length alphabet (all 288 symbols, RFC 1951 3.2.6).
const FIXED_LIT_LEN: [u8; L_CODES + 2] = {
    let mut lens = [0u8; L_CODES + 2];
    let mut n = 0;
    while n < L_CODES + 2 {
        lens[n] = match n {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
        n += 1;
    }
    lens
};
/// Bit-reversed fixed literal/length codes (zlib's `static_ltree` codes).
const FIXED_LIT_CODE: [u16; L_CODES + 2] = {
    let mut bl_count = [0u16; MAX_BITS + 1];
    let mut n = 0;
    while n < L_CODES + 2 {
        bl_count[FIXED_LIT_LEN[n] as usize] += 1;
        n += 1;
    }
    canonical_codes(&FIXED_LIT_LEN, L_CODES + 2, &bl_count)
};
/// Code lengths of the fixed distance alphabet: all 5.
const FIXED_DIST_LEN: [u8; D_CODES] = [5; D_CODES];
/// Bit-reversed fixed distance codes.
const FIXED_DIST_CODE: [u16; D_CODES] = {
    let mut codes = [0u16; D_CODES];
    let mut d = 0;
    while d < D_CODES {
        codes[d] = (d as u16).reverse_bits() >> 11;
        d += 1;
    }
    codes
};

/// Per-thread working memory, reused across calls so a ~200-byte token does not pay for
/// allocating (and zeroing) tables sized for 16 000 bytes.
///
/// Invariant between calls: every `head` slot is 0. `prev`, `window` and `syms` carry
/// stale data from earlier calls, which is harmless: `prev[p]` is always written (when
/// `p` is inserted) before it is read, `window` is overwritten up to the padding, and
/// `syms` is cleared.
struct Scratch {
    /// `head[h]`: latest position whose next three bytes hash to `h`; 0 means none.
    head: Box<[u16; HASH_SIZE]>,
    /// `prev[p]`: the previous position with the same hash as `p` (0 = end of chain).
    prev: Box<[u16; MAX_INPUT]>,
    /// The input followed by `WINDOW_PAD` zero bytes.
    window: Box<[u8; MAX_INPUT + WINDOW_PAD]>,
    /// LZ77 output, one entry per symbol: a literal byte (`< 256`), or
    /// `dist << 8 | (len - 3)` for a match (`dist >= 1`).
    syms: Vec<u32>,
}

impl Scratch {
    fn new() -> Box<Self> {
        fn zeroed<T: Copy + Default, const N: usize>() -> Box<[T; N]> {
            vec![T::default(); N]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("length is N"))
        }
        Box::new(Scratch {
            head: zeroed(),
            prev: zeroed(),
            window: zeroed(),
            syms: Vec::new(),
        })
    }
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Compresses `data` (at most [`MAX_INPUT`] bytes) into a zlib stream identical to C
/// zlib's `compress2(level 6)`.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= MAX_INPUT,
        "input too large for the exact zlib emulation"
    );
    // The scratch is taken out of the thread-local for the call and only put back once
    // its `head` table is clean again; after a panic a fresh one is simply allocated.
    let mut scratch = SCRATCH
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(Scratch::new);
    let mut lfreq = [0u32; L_CODES];
    let mut dfreq = [0u32; D_CODES];
    lz77(&mut scratch, data, &mut lfreq, &mut dfreq);

    // A stored block is at most `len + 5` bytes and zlib only picks another kind when
    // its estimate is smaller, so this capacity is never exceeded.
    let mut out = BitWriter {
        bytes: Vec::with_capacity(data.len() + 16),
        acc: 0,
        nbits: 0,
    };
    // CMF/FLG: deflate, 32 KiB window, "default compression" level flag, no dictionary.
    out.bytes.extend_from_slice(&[0x78, 0x9c]);
    flush_final_block(&mut out, data, &scratch.syms, &mut lfreq, &mut dfreq);
    out.align();
    out.bytes.extend_from_slice(&adler32(data).to_be_bytes());
    // If the thread-local is gone (thread teardown), the scratch is just dropped.
    let _ = SCRATCH.try_with(|cell| cell.set(Some(scratch)));
    out.bytes
}

/// Adler-32 checksum (RFC 1950).
pub(crate) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5_552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// zlib's hash of the three bytes at `pos`. Equal to the rolling `ins_h` zlib has after
/// inserting `pos`, because the 15-bit mask drops everything shifted in before them.
fn hash3(window: &[u8], pos: usize) -> usize {
    ((usize::from(window[pos]) << (2 * HASH_SHIFT))
        ^ (usize::from(window[pos + 1]) << HASH_SHIFT)
        ^ usize::from(window[pos + 2]))
        & HASH_MASK
}

/// zlib's lazy-evaluation LZ77 pass (`deflate_slow`) over the whole input. Fills
/// `scratch.syms` and tallies the symbol frequencies (zlib's `_tr_tally`).
fn lz77(
    scratch: &mut Scratch,
    data: &[u8],
    lfreq: &mut [u32; L_CODES],
    dfreq: &mut [u32; D_CODES],
) {
    let n = data.len();
    let Scratch {
        head,
        prev,
        window,
        syms,
    } = scratch;
    let window = &mut window[..n + WINDOW_PAD];
    window[..n].copy_from_slice(data);
    window[n..].fill(0);
    let window = &*window;
    let prev = &mut prev[..n.max(1)];
    syms.clear();
    syms.reserve(n);
    lfreq[END_BLOCK] = 1;

    // Hash chains: `head`/`prev` as in zlib. Position 0 doubles as "none", exactly as in
    // zlib, so it can never serve as a match source. Every position 0..=n-3 is inserted,
    // in order, so the rolling hash always equals `hash3` of the inserted position.
    let mut ins_h = 0;
    if n >= MIN_MATCH {
        ins_h = ((usize::from(window[0]) << HASH_SHIFT) ^ usize::from(window[1])) & HASH_MASK;
    }
    // Rolls the hash forward to the string at `pos`, links `pos` into its chain and
    // returns the previous chain head.
    let mut insert = |prev: &mut [u16], pos: usize| -> usize {
        ins_h = ((ins_h << HASH_SHIFT) ^ usize::from(window[pos + MIN_MATCH - 1])) & HASH_MASK;
        let chain_head = head[ins_h];
        prev[pos] = chain_head;
        head[ins_h] = pos as u16;
        usize::from(chain_head)
    };

    let mut strstart = 0usize;
    let mut match_length = MIN_MATCH - 1;
    let mut match_start = 0usize;
    let mut match_available = false;
    while strstart < n {
        let lookahead = n - strstart;
        let mut hash_head = 0usize;
        if lookahead >= MIN_MATCH {
            hash_head = insert(prev, strstart);
        }
        let prev_length = match_length;
        let prev_match = match_start;
        match_length = MIN_MATCH - 1;

        if hash_head != 0 && prev_length < MAX_LAZY && strstart - hash_head <= MAX_DIST {
            let (len, start) =
                longest_match(window, prev, strstart, hash_head, prev_length, lookahead);
            match_length = len;
            if let Some(start) = start {
                match_start = start;
            }
            if match_length == MIN_MATCH && strstart - match_start > TOO_FAR {
                match_length = MIN_MATCH - 1;
            }
        }

        if prev_length >= MIN_MATCH && match_length <= prev_length {
            // The previous match is at least as good: emit it and skip over it.
            let max_insert = strstart + lookahead - MIN_MATCH;
            let dist = strstart - 1 - prev_match;
            syms.push(((dist as u32) << 8) | (prev_length - MIN_MATCH) as u32);
            lfreq[usize::from(LENGTH_CODE[prev_length - MIN_MATCH]) + LITERALS + 1] += 1;
            dfreq[d_code(dist - 1)] += 1;
            for _ in 0..prev_length - 2 {
                strstart += 1;
                if strstart <= max_insert {
                    insert(prev, strstart);
                }
            }
            match_available = false;
            match_length = MIN_MATCH - 1;
            strstart += 1;
        } else if match_available {
            let c = window[strstart - 1];
            syms.push(u32::from(c));
            lfreq[usize::from(c)] += 1;
            strstart += 1;
        } else {
            match_available = true;
            strstart += 1;
        }
    }
    if match_available {
        let c = window[strstart - 1];
        syms.push(u32::from(c));
        lfreq[usize::from(c)] += 1;
    }

    // Restore the all-zero `head` invariant: only slots of inserted positions were set.
    for pos in 0..n.saturating_sub(MIN_MATCH - 1) {
        head[hash3(window, pos)] = 0;
    }
}

/// zlib's `longest_match`: walks the hash chain from `cur_match` looking for a match
/// longer than `prev_length`. Returns the (clamped) best length and, when it improved
/// on `prev_length`, where that match starts.
fn longest_match(
    window: &[u8],
    prev: &[u16],
    strstart: usize,
    mut cur_match: usize,
    prev_length: usize,
    lookahead: usize,
) -> (usize, Option<usize>) {
    let mut chain_length = MAX_CHAIN;
    if prev_length >= GOOD_LENGTH {
        chain_length >>= 2;
    }
    let nice_match = NICE_LENGTH.min(lookahead);
    let limit = strstart.saturating_sub(MAX_DIST);
    // Both slices span MAX_MATCH + 1 bytes, which the window padding guarantees.
    let scan = &window[strstart..=strstart + MAX_MATCH];
    let mut best_len = prev_length;
    let mut best_start = None;
    loop {
        let cand = &window[cur_match..=cur_match + MAX_MATCH];
        // Cheap rejections first; byte 2 needs no check since equal hashes imply it.
        if cand[best_len] == scan[best_len]
            && cand[best_len - 1] == scan[best_len - 1]
            && cand[0] == scan[0]
            && cand[1] == scan[1]
        {
            let len = match_len(scan, cand);
            if len > best_len {
                best_start = Some(cur_match);
                best_len = len;
                if len >= nice_match {
                    break;
                }
            }
        }
        cur_match = usize::from(prev[cur_match]);
        chain_length -= 1;
        if cur_match <= limit || chain_length == 0 {
            break;
        }
    }
    (best_len.min(lookahead), best_start)
}

/// Length of the common prefix of `a` and `b` (at least `MIN_MATCH` bytes long, known
/// equal), capped at `MAX_MATCH`; compares eight bytes at a time.
fn match_len(a: &[u8], b: &[u8]) -> usize {
    let mut len = MIN_MATCH;
    while len + 8 <= MAX_MATCH {
        let x = u64::from_le_bytes(a[len..len + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[len..len + 8].try_into().expect("8 bytes"));
        let diff = x ^ y;
        if diff != 0 {
            return len + (diff.trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    while len < MAX_MATCH && a[len] == b[len] {
        len += 1;
    }
    len
}

/// A Huffman tree as zlib builds it: code lengths per symbol (with room for zlib's guard
/// entry after the last code) and, once [`Tree::gen_codes`] ran, bit-reversed codes.
struct Tree {
    len: [u8; L_CODES + 1],
    code: [u16; L_CODES + 1],
    /// Code count per length, as `gen_bitlen` left it.
    bl_count: [u16; MAX_BITS + 1],
    /// Largest symbol with a non-zero frequency (after zlib's padding to two codes).
    max_code: usize,
}

impl Tree {
    /// zlib's `gen_codes`: canonical codes from the lengths (only needed when the tree
    /// is actually sent).
    fn gen_codes(&mut self) {
        self.code = canonical_codes(&self.len, self.max_code + 1, &self.bl_count);
    }
}

/// Static properties of one of the three alphabets.
struct TreeKind<'a> {
    static_len: Option<&'a [u8]>,
    extra_bits: &'a [u8],
    extra_base: usize,
    max_length: usize,
}

/// Running bit-cost estimates, as zlib keeps them (`opt_len` / `static_len`).
#[derive(Default)]
struct Cost {
    dynamic: i64,
    fixed: i64,
}

/// Heap entry: zlib's ordering key (frequency, then depth) above the node number, so a
/// comparison is one shift and one compare instead of two indirect lookups. Frequencies
/// stay below 2^15 (at most 16 002 symbols per block) and depths are zlib's `uch`, so
/// the fields never overlap.
fn heap_entry(freq: u32, depth: u8, node: usize) -> u64 {
    (u64::from(freq) << 24) | (u64::from(depth) << 16) | node as u64
}

/// zlib's `smaller(a, b)`: lower frequency first, then lower-or-equal depth.
fn smaller(a: u64, b: u64) -> bool {
    (a >> 16) <= (b >> 16)
}

fn entry_node(entry: u64) -> usize {
    usize::from(entry as u16)
}

/// zlib's `build_tree` + `gen_bitlen` (codes come later from [`Tree::gen_codes`]).
/// `freq` has one entry per symbol; zlib's dummy codes get frequency 1 written into it.
fn build_tree(freq: &mut [u32], kind: &TreeKind<'_>, cost: &mut Cost) -> Tree {
    let elems = freq.len();
    // heap[1..=heap_len] is zlib's priority queue (heap[0] unused).
    let mut heap = [0u64; L_CODES + 1];
    let mut heap_len = 0usize;
    // zlib keeps the nodes leaving the queue in `heap[heap_max..HEAP_SIZE]`, filled
    // downwards; `order[order_start..]` is the same sequence.
    let mut order = [0u16; HEAP_SIZE];
    let mut order_start = HEAP_SIZE;
    let mut dad = [0u16; HEAP_SIZE];
    let mut max_code: isize = -1;

    for (n, &f) in freq.iter().enumerate() {
        if f != 0 {
            heap_len += 1;
            heap[heap_len] = heap_entry(f, 0, n);
            max_code = n as isize;
        }
    }
    // Deflate needs at least two codes; zlib pads with dummy symbols of frequency 1.
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
        cost.dynamic -= 1;
        if let Some(stree) = kind.static_len {
            cost.fixed -= i64::from(stree[node]);
        }
    }
    let max_code = max_code as usize;

    for k in (1..=heap_len / 2).rev() {
        down_heap(&mut heap[..=heap_len], k);
    }

    let mut node = elems;
    loop {
        let n = heap[1];
        heap[1] = heap[heap_len];
        heap_len -= 1;
        down_heap(&mut heap[..=heap_len], 1);
        let m = heap[1];

        order_start -= 2;
        order[order_start + 1] = entry_node(n) as u16;
        order[order_start] = entry_node(m) as u16;

        let freq_sum = (n >> 24) as u32 + (m >> 24) as u32;
        let depth = ((n >> 16) as u8).max((m >> 16) as u8).wrapping_add(1);
        dad[entry_node(n)] = node as u16;
        dad[entry_node(m)] = node as u16;

        heap[1] = heap_entry(freq_sum, depth, node);
        node += 1;
        down_heap(&mut heap[..=heap_len], 1);
        if heap_len < 2 {
            break;
        }
    }
    order_start -= 1;
    order[order_start] = entry_node(heap[1]) as u16;

    // gen_bitlen: code lengths from the tree (parents come before their children in
    // `order`), clamped to max_length.
    let max_length = kind.max_length;
    let order = &order[order_start..];
    let mut node_len = [0u8; HEAP_SIZE];
    let mut bl_count = [0u16; MAX_BITS + 1];
    let mut overflow: i32 = 0;
    for &n in &order[1..] {
        let n = usize::from(n);
        let mut bits = usize::from(node_len[usize::from(dad[n])]) + 1;
        if bits > max_length {
            bits = max_length;
            overflow += 1;
        }
        node_len[n] = bits as u8;
        if n > max_code {
            continue; // internal node
        }
        bl_count[bits] += 1;
        let xbits = if n >= kind.extra_base {
            usize::from(kind.extra_bits[n - kind.extra_base])
        } else {
            0
        };
        let f = i64::from(freq[n]);
        cost.dynamic += f * (bits + xbits) as i64;
        if let Some(stree) = kind.static_len {
            cost.fixed += f * (usize::from(stree[n]) + xbits) as i64;
        }
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
        // Hand the corrected lengths out again, walking zlib's heap from its end.
        let mut h = order.len();
        for bits in (1..=max_length).rev() {
            let mut remaining = bl_count[bits];
            while remaining != 0 {
                h -= 1;
                let m = usize::from(order[h]);
                if m > max_code {
                    continue;
                }
                if usize::from(node_len[m]) != bits {
                    cost.dynamic += (bits as i64 - i64::from(node_len[m])) * i64::from(freq[m]);
                    node_len[m] = bits as u8;
                }
                remaining -= 1;
            }
        }
    }

    let mut len = [0u8; L_CODES + 1];
    len[..=max_code].copy_from_slice(&node_len[..=max_code]);
    Tree {
        len,
        code: [0; L_CODES + 1],
        bl_count,
        max_code,
    }
}

/// zlib's `pqdownheap`: restores the heap property below position `k` of the 1-based
/// heap `heap[1..]`.
fn down_heap(heap: &mut [u64], mut k: usize) {
    let heap_len = heap.len() - 1;
    let v = heap[k];
    let mut j = k << 1;
    while j <= heap_len {
        if j < heap_len && smaller(heap[j + 1], heap[j]) {
            j += 1;
        }
        if smaller(v, heap[j]) {
            break;
        }
        heap[k] = heap[j];
        k = j;
        j <<= 1;
    }
    heap[k] = v;
}

/// zlib's `gen_codes`: canonical, bit-reversed codes for the first `count` lengths
/// (later entries, such as the guard, get code 0) from the length counts.
const fn canonical_codes<const N: usize>(
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

/// zlib's `scan_tree`: tallies the code-length alphabet needed to send `len[..=max]`.
/// Also plants zlib's guard value after the last code.
fn scan_tree(tree: &mut Tree, bl_freq: &mut [u32; BL_CODES]) {
    tree.len[tree.max_code + 1] = GUARD;
    walk_lengths(&tree.len, tree.max_code, |op| match op {
        LengthOp::Plain(l) => bl_freq[usize::from(l)] += 1,
        LengthOp::Repeat(_) => bl_freq[REP_3_6] += 1,
        LengthOp::Zeros3To10(_) => bl_freq[REPZ_3_10] += 1,
        LengthOp::Zeros11To138(_) => bl_freq[REPZ_11_138] += 1,
    });
}

/// Stands for zlib's `0xffff` guard length: differs from every real length (0..=15).
const GUARD: u8 = 0xff;

/// One instruction of the run-length coded code-length sequence.
enum LengthOp {
    Plain(u8),
    Repeat(usize),
    Zeros3To10(usize),
    Zeros11To138(usize),
}

/// The run-length walk shared by zlib's `scan_tree` and `send_tree` (same decisions,
/// one tallies, the other emits). `len[max_code + 1]` must hold the guard.
fn walk_lengths(len: &[u8], max_code: usize, mut emit: impl FnMut(LengthOp)) {
    let mut prevlen: i32 = -1;
    let mut nextlen = len[0];
    let mut count = 0usize;
    let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
    for n in 0..=max_code {
        let curlen = nextlen;
        nextlen = len[n + 1];
        count += 1;
        if count < max_count && curlen == nextlen {
            continue;
        } else if count < min_count {
            for _ in 0..count {
                emit(LengthOp::Plain(curlen));
            }
        } else if curlen != 0 {
            if i32::from(curlen) != prevlen {
                emit(LengthOp::Plain(curlen));
                count -= 1;
            }
            emit(LengthOp::Repeat(count));
        } else if count <= 10 {
            emit(LengthOp::Zeros3To10(count));
        } else {
            emit(LengthOp::Zeros11To138(count));
        }
        count = 0;
        prevlen = i32::from(curlen);
        if nextlen == 0 {
            (max_count, min_count) = (138, 3);
        } else if curlen == nextlen {
            (max_count, min_count) = (6, 3);
        } else {
            (max_count, min_count) = (7, 4);
        }
    }
}

/// zlib's `_tr_flush_block` for the final (only) block.
fn flush_final_block(
    out: &mut BitWriter,
    data: &[u8],
    syms: &[u32],
    lfreq: &mut [u32; L_CODES],
    dfreq: &mut [u32; D_CODES],
) {
    let mut cost = Cost::default();
    let mut ltree = build_tree(
        lfreq,
        &TreeKind {
            static_len: Some(&FIXED_LIT_LEN),
            extra_bits: &EXTRA_LBITS,
            extra_base: LITERALS + 1,
            max_length: MAX_BITS,
        },
        &mut cost,
    );
    let mut dtree = build_tree(
        dfreq,
        &TreeKind {
            static_len: Some(&FIXED_DIST_LEN),
            extra_bits: &EXTRA_DBITS,
            extra_base: 0,
            max_length: MAX_BITS,
        },
        &mut cost,
    );
    let mut bl_freq = [0u32; BL_CODES];
    scan_tree(&mut ltree, &mut bl_freq);
    scan_tree(&mut dtree, &mut bl_freq);
    let mut bltree = build_tree(
        &mut bl_freq,
        &TreeKind {
            static_len: None,
            extra_bits: &EXTRA_BLBITS,
            extra_base: 0,
            max_length: MAX_BL_BITS,
        },
        &mut cost,
    );
    let mut max_blindex = BL_CODES - 1;
    while max_blindex >= 3 && bltree.len[BL_ORDER[max_blindex]] == 0 {
        max_blindex -= 1;
    }
    cost.dynamic += 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;

    let mut opt_lenb = (cost.dynamic + 3 + 7) >> 3;
    let static_lenb = (cost.fixed + 3 + 7) >> 3;
    if static_lenb <= opt_lenb {
        opt_lenb = static_lenb;
    }

    if data.len() as i64 + 4 <= opt_lenb {
        // Stored block: header bits, byte-align, LEN, NLEN, raw bytes.
        out.put_bits(1, 3);
        out.align();
        let len = data.len() as u16;
        out.bytes.extend_from_slice(&len.to_le_bytes());
        out.bytes.extend_from_slice(&(!len).to_le_bytes());
        out.bytes.extend_from_slice(data);
    } else if static_lenb == opt_lenb {
        out.put_bits((1 << 1) | 1, 3);
        compress_block(
            out,
            syms,
            (&FIXED_LIT_CODE[..], &FIXED_LIT_LEN[..]),
            (&FIXED_DIST_CODE[..], &FIXED_DIST_LEN[..]),
        );
    } else {
        ltree.gen_codes();
        dtree.gen_codes();
        bltree.gen_codes();
        out.put_bits((2 << 1) | 1, 3);
        let lcodes = ltree.max_code + 1;
        let dcodes = dtree.max_code + 1;
        out.put_bits((lcodes - 257) as u32, 5);
        out.put_bits((dcodes - 1) as u32, 5);
        out.put_bits((max_blindex + 1 - 4) as u32, 4);
        for &sym in &BL_ORDER[..=max_blindex] {
            out.put_bits(u32::from(bltree.len[sym]), 3);
        }
        send_tree(out, &ltree, &bltree);
        send_tree(out, &dtree, &bltree);
        compress_block(
            out,
            syms,
            (&ltree.code[..], &ltree.len[..]),
            (&dtree.code[..], &dtree.len[..]),
        );
    }
}

/// zlib's `send_tree`: emits a tree's code lengths with the code-length code.
fn send_tree(out: &mut BitWriter, tree: &Tree, bltree: &Tree) {
    let send = |out: &mut BitWriter, c: usize, extra: u32, extra_bits: u32| {
        let len = u32::from(bltree.len[c]);
        out.put_bits(u32::from(bltree.code[c]) | (extra << len), len + extra_bits);
    };
    walk_lengths(&tree.len, tree.max_code, |op| match op {
        LengthOp::Plain(l) => send(out, usize::from(l), 0, 0),
        LengthOp::Repeat(count) => send(out, REP_3_6, (count - 3) as u32, 2),
        LengthOp::Zeros3To10(count) => send(out, REPZ_3_10, (count - 3) as u32, 3),
        LengthOp::Zeros11To138(count) => send(out, REPZ_11_138, (count - 11) as u32, 7),
    });
}

/// zlib's `compress_block`: emits the symbols with the given (code, length) tables of
/// the literal/length and distance alphabets. Each Huffman code goes out together with
/// its extra bits (code first, as deflate orders them).
fn compress_block(
    out: &mut BitWriter,
    syms: &[u32],
    (lit_code, lit_len): (&[u16], &[u8]),
    (dist_code, dist_len): (&[u16], &[u8]),
) {
    for &sym in syms {
        let dist = (sym >> 8) as usize;
        if dist == 0 {
            let c = (sym & 0xff) as usize;
            out.put_bits(u32::from(lit_code[c]), u32::from(lit_len[c]));
        } else {
            let lc = (sym & 0xff) as usize;
            let code = usize::from(LENGTH_CODE[lc]);
            let (huff, len) = (lit_code[code + LITERALS + 1], lit_len[code + LITERALS + 1]);
            let extra = (lc - usize::from(BASE_LENGTH[code])) as u32;
            out.put_bits(
                u32::from(huff) | (extra << len),
                u32::from(len) + u32::from(EXTRA_LBITS[code]),
            );
            let d = dist - 1;
            let code = d_code(d);
            let (huff, len) = (dist_code[code], dist_len[code]);
            let extra = (d - usize::from(BASE_DIST[code])) as u32;
            out.put_bits(
                u32::from(huff) | (extra << len),
                u32::from(len) + u32::from(EXTRA_DBITS[code]),
            );
        }
    }
    out.put_bits(
        u32::from(lit_code[END_BLOCK]),
        u32::from(lit_len[END_BLOCK]),
    );
}

/// Least-significant-bit-first bit packer, as deflate requires. Between calls fewer
/// than 32 bits are pending in `acc`.
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    /// Appends the low `len` bits of `value` (`len <= 32`; higher bits must be zero).
    fn put_bits(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.nbits;
        self.nbits += len;
        if self.nbits >= 32 {
            self.bytes
                .extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.nbits -= 32;
        }
    }

    fn align(&mut self) {
        let nbytes = self.nbits.div_ceil(8) as usize;
        self.bytes
            .extend_from_slice(&self.acc.to_le_bytes()[..nbytes]);
        self.acc = 0;
        self.nbits = 0;
    }
}
