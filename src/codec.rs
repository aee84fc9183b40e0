//! rkyv encoding of what mast stores and replicates (entries, snapshots, membership
//! contexts). Every decode copies into an aligned buffer and validates (bytecheck) before
//! use: these bytes come from disk and from peers.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

pub type CodecError = Error;

/// The rkyv archive of `value`.
pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, Error>>,
{
    match rkyv::to_bytes::<Error>(value) {
        Ok(bytes) => bytes.into_vec(),
        // Serializing owned values into a growable buffer fails only on allocation
        // failure, which aborts anyway.
        Err(e) => unreachable!("rkyv serialization failed: {e}"),
    }
}

/// Validates `bytes` as an archived `T` and deserializes it.
pub fn decode<T>(bytes: &[u8]) -> Result<T, Error>
where
    T: Archive,
    T::Archived:
        for<'a> CheckBytes<HighValidator<'a, Error>> + Deserialize<T, HighDeserializer<Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, Error>(&aligned)
}
