//! Reproduces, bit for bit, what C zlib's `compress` produces at its default level (6)
//! with the default window (32 KiB) and memory level (8), for inputs small enough to
//! fit one block without the window ever sliding. Other zlib implementations
//! (miniz_oxide, zlib-rs, Go's compress/flate) emit different — equally valid — bytes,
//! so this is what makes our tokens identical to the ones Agora's Python, Java, Node.js
//! and PHP builders produce.
//!
//! **Why a port and not C zlib:** C zlib (`flate2` on a static `libz-sys`, one
//! `Compress` per thread, `reset()` between tokens) produces the same bytes by
//! construction, but building a token with it took 6.0 µs instead of 3.3–3.7 µs
//! (publisher) and 5.6 µs instead of 2.9 µs (subscriber), criterion medians on
//! 2026-11-30, and the token endpoint lost 8–15 % of its requests per second (not
//! profiled; on ~200-byte inputs zlib's per-stream setup — `deflateReset` clears its
//! 64 KiB hash table — and its full-alphabet tree passes likely dominate). See
//! docs/benchmarks.md, "AccessToken2 compressor: C zlib vs the port (2026-11-30)".
//! Byte-compatibility is held by the reference vectors in the token tests.
//!
//! The algorithm: lazy-matching LZ77 over a 3-byte rolling hash with hash chains (chain
//! limit 128, cut to 32 once a match of 8 is in hand, lazy evaluation below 16, stop at
//! 128), then one final block that is stored, fixed-Huffman or dynamic-Huffman,
//! whichever zlib's own size estimate picks, with Huffman trees built by zlib's
//! heap-based construction (including its tie-breaking and length-limiting rules).
//!
//! This runs once per issued token, so it avoids per-call allocation and zeroing (large
//! tables live in a reused per-thread [`Scratch`]) and only visits used symbols. None of
//! that changes a decision zlib makes, so the output bytes are unchanged.
//!
//! Files: this one holds the tables, the per-thread scratch and the entry points;
//! `lz77.rs` the matching pass; `tree.rs` the Huffman tree construction; `block.rs` the
//! block-type choice, the sending of the trees and symbols, and the bit packer.

use std::cell::Cell;

mod block;
mod lz77;
mod tree;

use block::{flush_final_block, BitWriter};
use lz77::{lz77, Freqs};
use tree::{canonical_codes, TreeScratch, HEAP_ARRAY};

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

/// Length code (0..29) of a match length minus 3 (zlib's `_length_code`), and the first
/// length minus 3 of that code (its `base_length`, but 255 for code 28, whose extra bits
/// zlib never sends). Codes 0..=7 stand for one length each; above, every 4 codes cover a
/// power of two, so the top two bits below the leading one pick the code (RFC 1951 3.2.5).
fn length_code(lc: usize) -> (usize, usize) {
    if lc < 8 {
        (lc, lc)
    } else if lc == 255 {
        (LENGTH_CODES - 1, 255)
    } else {
        let top = lc.ilog2() as usize;
        let code = 4 * (top - 1) + ((lc >> (top - 2)) & 3);
        (code, (4 + (code & 3)) << (top - 2))
    }
}

/// Distance code (0..30) of a distance minus 1 (zlib's `d_code`), and the first distance
/// minus 1 of that code: codes 0..=3 stand for one distance each; above, every 2 codes
/// cover a power of two (RFC 1951 3.2.5).
fn dist_code(d: usize) -> (usize, usize) {
    if d < 4 {
        (d, d)
    } else {
        let top = d.ilog2() as usize;
        let code = 2 * top + ((d >> (top - 1)) & 1);
        (code, (2 + (code & 1)) << (top - 1))
    }
}

/// Code lengths of the fixed literal/length alphabet (all 288 symbols, RFC 1951 3.2.6):
/// 8, but 9 for 144..=255 and 7 for 256..=279.
const FIXED_LIT_LEN: [u8; L_CODES + 2] = {
    let mut lens = [8u8; L_CODES + 2];
    let mut n = 144;
    while n < 280 {
        lens[n] = if n < 256 { 9 } else { 7 };
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

/// Per-thread working memory, reused so a ~200-byte token does not pay for allocating
/// and zeroing tables sized for 16 000 bytes. Stale data from earlier calls is harmless:
/// `head` entries carry the generation that wrote them, `prev[p]` is written (when `p`
/// is inserted) before it is read, `window` is rewritten up to its padding, `syms` is
/// cleared, and see [`TreeScratch`].
struct Scratch {
    /// `head[h]`: latest position whose next three bytes hash to `h`, tagged with the
    /// call that wrote it as `generation << 16 | position`. Entries of earlier calls
    /// read as empty, which spares clearing the table after every call.
    head: Box<[u32; HASH_SIZE]>,
    /// Tag of the current call, `1..=0xffff` (0 marks never-written entries).
    generation: u32,
    /// `prev[p]`: the previous position with the same hash as `p` (0 = end of chain).
    prev: Box<[u16; MAX_INPUT]>,
    /// The input followed by `WINDOW_PAD` zero bytes.
    window: Box<[u8; MAX_INPUT + WINDOW_PAD]>,
    /// LZ77 output, one entry per symbol: a literal byte (`< 256`), or
    /// `dist << 8 | (len - 3)` for a match (`dist >= 1`).
    syms: Vec<u32>,
    tree: TreeScratch,
}

impl Scratch {
    fn new() -> Box<Self> {
        Box::new(Scratch {
            head: vec![0; HASH_SIZE].try_into().expect("HASH_SIZE entries"),
            generation: 0,
            prev: vec![0; MAX_INPUT].try_into().expect("MAX_INPUT entries"),
            window: vec![0; MAX_INPUT + WINDOW_PAD].try_into().expect("padded"),
            syms: Vec::new(),
            tree: TreeScratch {
                heap: [0; HEAP_ARRAY],
                order: [0; HEAP_SIZE],
                dad: [0; HEAP_SIZE],
            },
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
    // The scratch is taken out of the thread-local for the call (so a reentrant call,
    // were there one, would get its own) and put back afterwards.
    let mut scratch = SCRATCH
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(Scratch::new);
    let mut freqs = Freqs {
        lit: [0; L_CODES],
        dist: [0; D_CODES],
        lit_used: [0; L_CODES.div_ceil(64)],
        dist_used: [0; 1],
    };
    lz77(&mut scratch, data, &mut freqs);

    // The stream is at most `len + 11` bytes (header, stored block, checksum): zlib only
    // picks another block kind when its exact size estimate is smaller.
    let mut out = BitWriter {
        bytes: Vec::with_capacity(data.len() + 16),
        acc: 0,
        nbits: 0,
    };
    // CMF/FLG: deflate, 32 KiB window, "default compression" level flag, no dictionary.
    out.bytes.extend_from_slice(&[0x78, 0x9c]);
    let Scratch { syms, tree, .. } = &mut *scratch;
    flush_final_block(&mut out, data, syms, tree, &mut freqs);
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
