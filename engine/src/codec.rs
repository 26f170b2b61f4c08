//! The journal's and the checkpoints' encoder: the bytes of `journal::codec()` (bincode 1.3 with
//! variable-length integers, little-endian), written straight into a `Vec<u8>`.
//!
//! bincode's own serializer writes every field through `io::Write` and its error type (a single
//! byte is a `write_all` of a one-byte slice, each integer a call that is not inlined): its varint
//! function alone was 7-17 % of a shard thread's samples at 100 M transfers, and criterion's
//! `journal/encode_batch` (8,189 payments) takes about a fifth less time with this one
//! (535-544 -> 418-428 us, its BLAKE3 of 64 us included). This one pushes into the vector,
//! with nothing that can fail but a sequence or map without a length (as bincode). It writes the
//! same bytes for every value (`tests`: each serde shape and the extremes of every integer width;
//! `tests/journal_format.rs` pins a record holding every command). Decoding stays bincode's.

use serde::ser::{self, Serialize};

/// The varint markers of bincode 1.3: a value up to 250 is its own byte; larger ones are this
/// byte, then the value as a little-endian u16, u32, u64 or u128.
const SINGLE_BYTE_MAX: u8 = 250;
const U16_BYTE: u8 = 251;
const U32_BYTE: u8 = 252;
const U64_BYTE: u8 = 253;
const U128_BYTE: u8 = 254;

/// Why a value did not encode: a sequence or map that does not know its length (bincode
/// refuses those too), or a `Serialize` impl's own error.
#[derive(Debug)]
pub struct EncodeError(String);

impl EncodeError {
    /// An error of a sink (`encode_to`), with its reason.
    pub fn new(reason: String) -> EncodeError {
        EncodeError(reason)
    }
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        EncodeError(message.to_string())
    }
}

/// Appends `value`'s encoding (the same bytes as `journal::codec().serialize_into`) to `out`.
/// On an error, `out` holds what was written before it.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    value.serialize(&mut Encoder { out, sink: None })
}

/// Hands `value`'s encoding (the same bytes as `encode_into`) to `sink` in consecutive slices of
/// about `STREAM_BYTES` (more when one element of a sequence or map is larger): the whole encoding
/// is never held at once. Stops at the first error of `sink`.
pub fn encode_to<T: Serialize + ?Sized>(value: &T, sink: &mut dyn FnMut(&[u8]) -> Result<(), EncodeError>) -> Result<(), EncodeError> {
    let mut out = Vec::with_capacity(2 * STREAM_BYTES);
    value.serialize(&mut Encoder { out: &mut out, sink: Some(&mut *sink) })?;
    if !out.is_empty() {
        sink(&out)?;
    }
    Ok(())
}

/// The bytes `encode_to` gathers before handing them on (checked after each element of a
/// sequence, tuple or map and each field).
pub const STREAM_BYTES: usize = 64 << 10;

/// The serializer: the output vector, and where it goes once full (`encode_to`).
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    sink: Option<&'a mut dyn FnMut(&[u8]) -> Result<(), EncodeError>>,
}

impl Encoder<'_> {
    #[inline(always)]
    fn varint(&mut self, n: u64) {
        if n <= SINGLE_BYTE_MAX as u64 {
            self.out.push(n as u8);
        } else if n <= u16::MAX as u64 {
            self.marked(U16_BYTE, &(n as u16).to_le_bytes());
        } else if n <= u32::MAX as u64 {
            self.marked(U32_BYTE, &(n as u32).to_le_bytes());
        } else {
            self.marked(U64_BYTE, &n.to_le_bytes());
        }
    }

    /// A marker byte and the value's little-endian bytes, in one copy.
    #[inline(always)]
    fn marked<const N: usize>(&mut self, marker: u8, bytes: &[u8; N]) {
        let mut both = [marker; 17];
        both[1..=N].copy_from_slice(bytes);
        self.out.extend_from_slice(&both[..=N]);
    }

    /// A 128-bit value: as a 64-bit one when it fits, else its marker and 16 bytes.
    #[inline]
    fn varint128(&mut self, n: u128) {
        match u64::try_from(n) {
            Ok(n) => self.varint(n),
            Err(_) => self.marked(U128_BYTE, &n.to_le_bytes()),
        }
    }

    /// Hands the bytes gathered on once they pass `STREAM_BYTES`, when streaming.
    #[inline(always)]
    fn passed(&mut self) -> Result<(), EncodeError> {
        if let Some(sink) = &mut self.sink {
            if self.out.len() >= STREAM_BYTES {
                sink(self.out)?;
                self.out.clear();
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn zigzag(n: i64) -> u64 {
        if n < 0 {
            !(n as u64) * 2 + 1
        } else {
            (n as u64) * 2
        }
    }

    #[inline(always)]
    fn zigzag128(n: i128) -> u128 {
        if n < 0 {
            !(n as u128) * 2 + 1
        } else {
            (n as u128) * 2
        }
    }

    #[inline(always)]
    fn length(&mut self, len: Option<usize>) -> Result<(), EncodeError> {
        let len = len.ok_or_else(|| EncodeError("a sequence or map without a length does not encode".into()))?;
        self.varint(len as u64);
        Ok(())
    }
}

impl<'a> ser::Serializer for &mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push(v as u8);
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.out.push(v as u8);
        Ok(())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.varint(Encoder::zigzag(v as i64));
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.varint(Encoder::zigzag(v as i64));
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.varint(Encoder::zigzag(v));
        Ok(())
    }
    #[inline]
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.varint128(Encoder::zigzag128(v));
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.out.push(v);
        Ok(())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.varint(v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.varint(v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        self.varint(v);
        Ok(())
    }
    #[inline]
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        self.varint128(v);
        Ok(())
    }
    // Floats: serde's trait requires them, and they write bincode's bytes. No type of the
    // journal or a checkpoint holds one (money is integer minor units; the codec tests use them
    // only to compare with bincode).
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.out.extend_from_slice(v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.serialize_bytes(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push(0);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.out.push(1);
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), EncodeError> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(self, _name: &'static str, variant_index: u32, _variant: &'static str) -> Result<(), EncodeError> {
        self.varint(variant_index as u64);
        Ok(())
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.varint(variant_index as u64);
        value.serialize(self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        self.length(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_variant(self, _name: &'static str, variant_index: u32, _variant: &'static str, _len: usize) -> Result<Self, EncodeError> {
        self.varint(variant_index as u64);
        Ok(self)
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, EncodeError> {
        self.length(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    #[inline]
    fn serialize_struct_variant(self, _name: &'static str, variant_index: u32, _variant: &'static str, _len: usize) -> Result<Self, EncodeError> {
        self.varint(variant_index as u64);
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Elements, fields and entries: each encoded in turn, nothing between or after them.
macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl<'a> ser::$trait for &mut Encoder<'a> {
            type Ok = ();
            type Error = EncodeError;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? value: &T) -> Result<(), EncodeError> {
                value.serialize(&mut **self)?;
                self.passed()
            }
            #[inline]
            fn end(self) -> Result<(), EncodeError> {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, serialize_field, _key);
compound!(SerializeStructVariant, serialize_field, _key);

impl<'a> ser::SerializeMap for &mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        key.serialize(&mut **self)
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut **self)?;
        self.passed()
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options;
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// bincode's bytes for `value`, and this encoder's.
    fn both<T: Serialize + ?Sized>(value: &T) -> (Vec<u8>, Vec<u8>) {
        let theirs = crate::journal::codec().serialize(value).expect("bincode encodes it");
        let mut ours = vec![0xAA];
        encode_into(value, &mut ours).expect("encodes");
        (theirs, ours[1..].to_vec())
    }

    fn same<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
        let (theirs, ours) = both(value);
        assert_eq!(ours, theirs, "{value:?}");
    }

    /// Every integer width at and around each varint boundary, both signs.
    #[test]
    fn integers_encode_as_bincode_does() {
        let edges: Vec<u128> = [0u128, 1, 127, 128, 249, 250, 251, 252, 253, 254, 255, 256, 65_535, 65_536, u32::MAX as u128, u32::MAX as u128 + 1]
            .into_iter()
            .chain([u64::MAX as u128 - 1, u64::MAX as u128, u64::MAX as u128 + 1, u128::MAX - 1, u128::MAX])
            .collect();
        for &n in &edges {
            same(&(n as u8));
            same(&(n as u16));
            same(&(n as u32));
            same(&(n as u64));
            same(&n);
            same(&(n as usize));
            for sign in [1i128, -1] {
                let v = (n as i128).wrapping_mul(sign);
                same(&(v as i8));
                same(&(v as i16));
                same(&(v as i32));
                same(&(v as i64));
                same(&v);
            }
        }
        for v in [i8::MIN, i8::MAX] {
            same(&v);
        }
        for v in [i16::MIN, i16::MAX] {
            same(&v);
        }
        for v in [i32::MIN, i32::MAX] {
            same(&v);
        }
        for v in [i64::MIN, i64::MAX] {
            same(&v);
        }
        for v in [i128::MIN, i128::MAX] {
            same(&v);
        }
    }

    #[derive(Serialize, Debug)]
    struct Unit;

    #[derive(Serialize, Debug)]
    struct Newtype(u64);

    #[derive(Serialize, Debug)]
    struct Tuple(i32, String, Option<u16>);

    #[derive(Serialize, Debug)]
    #[allow(dead_code)]
    enum Shapes {
        Unit,
        Newtype(i64),
        Tuple(u8, char),
        Struct { a: bool, b: Vec<u32>, c: [u8; 3] },
    }

    #[derive(Serialize, Debug)]
    struct Everything {
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        tuple: Tuple,
        shapes: Vec<Shapes>,
        text: String,
        bytes: serde_bytes_like::Bytes,
        floats: (f32, f64),
        chars: Vec<char>,
        map: BTreeMap<u32, String>,
        none: Option<Vec<u8>>,
        some: Option<Box<Everything>>,
    }

    /// `serialize_bytes` as a byte-slice wrapper would call it (serde encodes `Vec<u8>` as a
    /// sequence, which the other fields cover).
    mod serde_bytes_like {
        #[derive(Debug)]
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }
    }

    fn everything(depth: u32) -> Everything {
        Everything {
            unit: (),
            unit_struct: Unit,
            newtype: Newtype(u64::MAX - depth as u64),
            tuple: Tuple(-300, "tuple".into(), Some(300)),
            shapes: vec![Shapes::Unit, Shapes::Newtype(-1), Shapes::Tuple(7, 'é'), Shapes::Struct { a: true, b: vec![0, 250, 251, 70_000], c: [1, 2, 3] }],
            text: "x".repeat(300),
            bytes: serde_bytes_like::Bytes(vec![0xFF; 251]),
            floats: (1.5, -2.25),
            chars: vec!['a', 'ß', '€', '😀'],
            map: (0..300).map(|k| (k * 1000, format!("{k}"))).collect(),
            none: None,
            some: (depth > 0).then(|| Box::new(everything(depth - 1))),
        }
    }

    /// Every serde shape (unit, unit struct, newtype, tuple, each enum variant kind, strings,
    /// bytes, floats, chars, maps, options), nested.
    #[test]
    fn every_shape_encodes_as_bincode_does() {
        same(&everything(2));
    }

    /// Streamed, the slices join to the same bytes, none much past `STREAM_BYTES` but for one
    /// large element; a failing sink stops the encoding with its error.
    #[test]
    fn streamed_slices_join_to_the_same_bytes() {
        let value: Vec<Everything> = (0..60).map(|_| everything(1)).collect();
        let mut whole = Vec::new();
        encode_into(&value, &mut whole).unwrap();
        assert!(whole.len() > 4 * STREAM_BYTES, "{}", whole.len());
        let mut slices: Vec<Vec<u8>> = Vec::new();
        encode_to(&value, &mut |bytes| {
            slices.push(bytes.to_vec());
            Ok(())
        })
        .unwrap();
        assert!(
            slices.len() >= 4 && slices.iter().all(|slice| slice.len() < STREAM_BYTES + (32 << 10)),
            "{:?}",
            slices.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(slices.concat(), whole);
        assert_eq!(slices.concat(), crate::journal::codec().serialize(&value).unwrap());
        let mut calls = 0;
        let failed = encode_to(&value, &mut |_| {
            calls += 1;
            Err(EncodeError("the disk is full".into()))
        });
        assert_eq!((failed.unwrap_err().to_string(), calls), ("the disk is full".to_string(), 1));
    }

    /// A sequence that does not know its length is refused, as bincode refuses it.
    #[test]
    fn a_sequence_without_a_length_is_an_error() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = serializer.serialize_seq(None)?;
                seq.serialize_element(&1u8)?;
                seq.end()
            }
        }
        assert!(crate::journal::codec().serialize(&Unsized).is_err());
        assert!(encode_into(&Unsized, &mut Vec::new()).is_err());
    }
}
