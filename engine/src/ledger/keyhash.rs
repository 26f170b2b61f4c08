//! XXH3-128 of an idempotency key's bytes, read where they lie; XXH3-64 of bytes given word by
//! word (a payment's content hash, `command::content_hash`).
//!
//! An idempotency key is XXH3-128 (seed 0, the default secret) of the platform (4 bytes,
//! little-endian), the command kind (1 byte) and the order number's text. Building those bytes in
//! a stack buffer and hashing it made the hash's loads wait on the buffer's stores (a load that
//! spans several recent stores cannot be forwarded and waits for them to reach the cache, and
//! behind them every store still missing the cache: the order, postings and records the previous
//! command wrote), about a fifth of a payment's apply in the profile. Here the five prefix bytes
//! are a register and the text is read in place, so nothing is stored and read back. The result
//! is the crate's `xxh3_128` of the same bytes, bit for bit (stored keys depend on it; the tests
//! compare every length).

use crate::ledger::command::OUT_ORDER_NO_BYTES_MAX;

/// The prefix: platform and kind.
const PREFIX: usize = 5;

/// The first 128 bytes of XXH3's default secret (all that inputs of up to 128 bytes read).
const SECRET: [u8; 128] = [
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c, //
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f, //
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21, //
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c, //
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3, //
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8, //
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d, //
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, //
];

const PRIME32_2: u32 = 0x85EB_CA77;
const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;

const fn secret64(offset: usize) -> u64 {
    u64::from_le_bytes([
        SECRET[offset],
        SECRET[offset + 1],
        SECRET[offset + 2],
        SECRET[offset + 3],
        SECRET[offset + 4],
        SECRET[offset + 5],
        SECRET[offset + 6],
        SECRET[offset + 7],
    ])
}

#[inline(always)]
fn mul64_to128(left: u64, right: u64) -> (u64, u64) {
    let product = left as u128 * right as u128;
    (product as u64, (product >> 64) as u64)
}

#[inline(always)]
fn mul128_fold64(left: u64, right: u64) -> u64 {
    let (low, high) = mul64_to128(left, right);
    low ^ high
}

#[inline(always)]
fn xorshift64(value: u64, shift: u32) -> u64 {
    value ^ (value >> shift)
}

#[inline(always)]
fn avalanche(value: u64) -> u64 {
    xorshift64(xorshift64(value, 37).wrapping_mul(0x1656_6791_9E37_79F9), 32)
}

/// The input: `prefix` (its low five bytes) then the first `text_len` bytes of `text` (the rest of
/// `text` is zero and never part of it).
struct Input<'a> {
    prefix: u64,
    text: &'a [u8; OUT_ORDER_NO_BYTES_MAX],
    len: usize,
}

impl Input<'_> {
    /// Eight bytes of the text from `offset` (`offset + 8 <= 64`).
    #[inline(always)]
    fn text64(&self, offset: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.text[offset..offset + 8]);
        u64::from_le_bytes(word)
    }

    /// Eight input bytes from `offset` (`offset + 8 <= len`), little-endian.
    #[inline(always)]
    fn read64(&self, offset: usize) -> u64 {
        if offset >= PREFIX {
            self.text64(offset - PREFIX)
        } else {
            // The prefix's bytes from `offset`, then the text's first: the text bytes shifted out
            // at the top lie past the eight read.
            (self.prefix >> (8 * offset)) | (self.text64(0) << (8 * (PREFIX - offset)))
        }
    }

    /// Four input bytes from `offset` (`offset + 4 <= len <= 8`), little-endian.
    #[inline(always)]
    fn read32(&self, offset: usize) -> u32 {
        // `len <= 8` means the text is at most three bytes, so every read starts in the prefix.
        debug_assert!(offset < PREFIX);
        self.read64(offset) as u32
    }
}

/// XXH3-128 with seed 0 and the default secret of the 5 bytes `prefix` (low first) followed by
/// `text[..text_len]`; `1 <= text_len <= 64`.
#[inline]
pub(crate) fn xxh3_128_prefixed(prefix: u64, text: &[u8; OUT_ORDER_NO_BYTES_MAX], text_len: usize) -> u128 {
    assert!((1..=OUT_ORDER_NO_BYTES_MAX).contains(&text_len), "an order number has 1 to 64 bytes");
    let input = Input { prefix: prefix & 0xFF_FFFF_FFFF, text, len: PREFIX + text_len };
    match input.len {
        0..=8 => len_4to8(&input),
        9..=16 => len_9to16(&input),
        _ => len_17to128(&input),
    }
}

fn len_4to8(input: &Input) -> u128 {
    let len = input.len;
    let low = input.read32(0);
    let high = input.read32(len - 4);
    let input64 = (low as u64).wrapping_add((high as u64) << 32);
    let keyed = input64 ^ (secret64(16) ^ secret64(24));
    let (mut lo, mut hi) = mul64_to128(keyed, PRIME64_1.wrapping_add((len as u64) << 2));
    hi = hi.wrapping_add(lo << 1);
    lo ^= hi >> 3;
    lo = xorshift64(lo, 35).wrapping_mul(0x9FB2_1C65_1E98_DF25);
    lo = xorshift64(lo, 28);
    lo as u128 | (avalanche(hi) as u128) << 64
}

fn len_9to16(input: &Input) -> u128 {
    let len = input.len;
    let flip_lo = secret64(32) ^ secret64(40);
    let flip_hi = secret64(48) ^ secret64(56);
    let input_lo = input.read64(0);
    let mut input_hi = input.read64(len - 8);
    let (mut mul_low, mut mul_high) = mul64_to128(input_lo ^ input_hi ^ flip_lo, PRIME64_1);
    mul_low = mul_low.wrapping_add((len as u64 - 1) << 54);
    input_hi ^= flip_hi;
    mul_high = mul_high.wrapping_add(input_hi.wrapping_add((input_hi as u32 as u64).wrapping_mul((PRIME32_2 - 1) as u64)));
    mul_low ^= mul_high.swap_bytes();
    let (result_low, mut result_high) = mul64_to128(mul_low, PRIME64_2);
    result_high = result_high.wrapping_add(mul_high.wrapping_mul(PRIME64_2));
    avalanche(result_low) as u128 | (avalanche(result_high) as u128) << 64
}

fn len_17to128(input: &Input) -> u128 {
    let len = input.len;
    let mix16 = |offset: usize, secret: usize| mul128_fold64(input.read64(offset) ^ secret64(secret), input.read64(offset + 8) ^ secret64(secret + 8));
    let sum16 = |offset: usize| input.read64(offset).wrapping_add(input.read64(offset + 8));
    let mut lo = (len as u64).wrapping_mul(PRIME64_1);
    let mut hi = 0u64;
    let mut mix32 = |first: usize, second: usize, secret: usize| {
        lo = lo.wrapping_add(mix16(first, secret));
        lo ^= sum16(second);
        hi = hi.wrapping_add(mix16(second, secret + 16));
        hi ^= sum16(first);
    };
    if len > 32 {
        if len > 64 {
            if len > 96 {
                mix32(48, len - 64, 96);
            }
            mix32(32, len - 48, 64);
        }
        mix32(16, len - 32, 32);
    }
    mix32(0, len - 16, 0);
    let low = avalanche(lo.wrapping_add(hi));
    let high =
        0u64.wrapping_sub(avalanche(lo.wrapping_mul(PRIME64_1).wrapping_add(hi.wrapping_mul(PRIME64_4)).wrapping_add((len as u64).wrapping_mul(PRIME64_2))));
    low as u128 | (high as u128) << 64
}

/// XXH3-64 with seed 0 and the default secret of `len` bytes (17 to 128) that `read64` gives
/// eight at a time: `read64(offset)` is bytes `offset..offset + 8`, little-endian (it is only
/// asked for offsets the hash reads: 0, 8, 16, ... up to 56 and `len - 64` ... `len - 8` in steps
/// of 8). So a caller whose bytes are fields at known places hands them over from registers,
/// with no buffer to store and read back. Bit for bit the crate's `xxh3_64` of the same bytes
/// (stored content hashes depend on it; the tests compare every length).
#[inline(always)]
pub(crate) fn xxh3_64_17to128(len: usize, read64: impl Fn(usize) -> u64) -> u64 {
    debug_assert!((17..=128).contains(&len), "17 to 128 bytes");
    let mix16 = |offset: usize, secret: usize| mul128_fold64(read64(offset) ^ secret64(secret), read64(offset + 8) ^ secret64(secret + 8));
    let mut acc = (len as u64).wrapping_mul(PRIME64_1);
    if len > 32 {
        if len > 64 {
            if len > 96 {
                acc = acc.wrapping_add(mix16(48, 96)).wrapping_add(mix16(len - 64, 112));
            }
            acc = acc.wrapping_add(mix16(32, 64)).wrapping_add(mix16(len - 48, 80));
        }
        acc = acc.wrapping_add(mix16(16, 32)).wrapping_add(mix16(len - 32, 48));
    }
    acc = acc.wrapping_add(mix16(0, 0)).wrapping_add(mix16(len - 16, 16));
    avalanche(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_64_of_words_equals_the_crates_at_every_length() {
        let mut values = crate::ledger::TestValues::seeded(0x0F1E_2D3C_4B5A_6978);
        for len in 17..=128 {
            for _ in 0..100 {
                let bytes: Vec<u8> = (0..len).map(|_| (values.next() >> 56) as u8).collect();
                let read64 = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("eight bytes"));
                assert_eq!(xxh3_64_17to128(len, read64), xxhash_rust::xxh3::xxh3_64(&bytes), "length {len}");
            }
        }
    }

    #[test]
    fn equals_the_crates_xxh3_128_of_the_same_bytes_at_every_length() {
        let mut values = crate::ledger::TestValues::seeded(0x1234_5678_9ABC_DEF0);
        for text_len in 1..=OUT_ORDER_NO_BYTES_MAX {
            for _ in 0..200 {
                // Bytes past the text are not part of the input whatever they hold.
                let mut text = [0u8; OUT_ORDER_NO_BYTES_MAX];
                for byte in &mut text {
                    *byte = (values.next() >> 56) as u8;
                }
                let prefix = values.next() >> 24;
                let mut bytes = prefix.to_le_bytes()[..PREFIX].to_vec();
                bytes.extend_from_slice(&text[..text_len]);
                assert_eq!(xxh3_128_prefixed(prefix, &text, text_len), xxhash_rust::xxh3::xxh3_128(&bytes), "text length {text_len}");
            }
        }
    }
}
