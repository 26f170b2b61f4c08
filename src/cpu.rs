//! The CPU features this build was compiled for, checked before anything runs.
//!
//! `.cargo/config.toml` builds x86-64 for x86-64-v2 plus PCLMULQDQ (RocksDB's CRC32C in hardware),
//! and RocksDB's C++ is compiled with the same flags. On an older CPU such a binary would stop on
//! an illegal instruction wherever the compiler first used one; this check says so at the start
//! instead, naming what is missing. A build for an older CPU (`RUSTFLAGS=""`) asks for nothing.

/// The features this build may use (as `target_feature` names) that the CPU does not have, by
/// asking `has` about each one the build was compiled with.
pub fn missing_features(has: impl Fn(&str) -> bool) -> Vec<&'static str> {
    let compiled: [(&'static str, bool); 7] = [
        ("sse3", cfg!(target_feature = "sse3")),
        ("ssse3", cfg!(target_feature = "ssse3")),
        ("sse4.1", cfg!(target_feature = "sse4.1")),
        ("sse4.2", cfg!(target_feature = "sse4.2")),
        ("popcnt", cfg!(target_feature = "popcnt")),
        ("cmpxchg16b", cfg!(target_feature = "cmpxchg16b")),
        ("pclmulqdq", cfg!(target_feature = "pclmulqdq")),
    ];
    compiled.into_iter().filter(|(name, used)| *used && !has(name)).map(|(name, _)| name).collect()
}

/// Whether this CPU has `feature` (one of `missing_features`' names).
#[cfg(target_arch = "x86_64")]
fn detected(feature: &str) -> bool {
    match feature {
        "sse3" => std::arch::is_x86_feature_detected!("sse3"),
        "ssse3" => std::arch::is_x86_feature_detected!("ssse3"),
        "sse4.1" => std::arch::is_x86_feature_detected!("sse4.1"),
        "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
        "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
        "cmpxchg16b" => std::arch::is_x86_feature_detected!("cmpxchg16b"),
        "pclmulqdq" => std::arch::is_x86_feature_detected!("pclmulqdq"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_feature: &str) -> bool {
    true
}

/// Refuses to go on, with the features named, on a CPU this build cannot run on.
pub fn check() -> anyhow::Result<()> {
    let missing = missing_features(detected);
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "this CPU lacks {}, which this build of clearing was compiled to use (x86-64-v2 and PCLMULQDQ, \
         .cargo/config.toml); rebuild with RUSTFLAGS=\"\" to run on it",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_without_the_compiled_features_is_named_and_this_one_passes() {
        let none = missing_features(|_| false);
        #[cfg(all(target_arch = "x86_64", target_feature = "sse4.2", target_feature = "pclmulqdq"))]
        {
            assert!(none.contains(&"sse4.2") && none.contains(&"pclmulqdq") && none.contains(&"popcnt"), "{none:?}");
            assert!(missing_features(|feature| feature != "pclmulqdq") == vec!["pclmulqdq"]);
        }
        assert!(missing_features(|_| true).is_empty());
        check().expect("the machine that builds runs what it built");
    }
}
