//! `clearing verify` (the journal's hash chain, live and archived) and `clearing archive` (moving
//! journal older than the oldest checkpoint out of the live database).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use engine::archive::{self, Archived, ArchivedChain};
use engine::journal::{first_live_sequence, Break, BreakKind, ChainHead, META_SHARD_COUNT};
use storage::Store;
use storage_rocks::RocksStore;

/// `clearing verify`.
#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A directory of archives (`clearing archive --to`): checked too, and the live journal must
    /// go on from them.
    #[arg(long)]
    archives: Option<PathBuf>,
}

/// `clearing archive`.
#[derive(Args)]
pub struct ArchiveArgs {
    /// Archive batches written before this business date (YYYY-MM-DD, business time).
    #[arg(long)]
    before: String,
    /// The directory the archive files and their manifests go to.
    #[arg(long)]
    to: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The shard count the data directory was written with.
fn shard_count(store: &dyn Store, data_dir: &Path) -> Result<u16> {
    let bytes = store.get(META_SHARD_COUNT)?.with_context(|| format!("{} holds no clearing data (no shard count)", data_dir.display()))?;
    let bytes: [u8; 2] = bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("{}: a malformed shard count", data_dir.display()))?;
    Ok(u16::from_le_bytes(bytes))
}

/// Walks every shard's chain (and the archives, if given); prints a line per shard and a summary.
/// Returns whether everything is sound.
pub fn verify(args: VerifyArgs, out: &mut dyn Write) -> Result<bool> {
    let (_, data_dir) = crate::load(args.config, args.data_dir)?;
    if !data_dir.join("CURRENT").exists() {
        anyhow::bail!("{} is not a database directory", data_dir.display());
    }
    // Read-only: no lock is taken, so it also opens beside a running server (it then checks
    // what was durable when it opened).
    let shared: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(RocksStore::open_read_only(&data_dir).with_context(|| format!("opening {}", data_dir.display()))?);
    let store = &*shared;
    let shards = shard_count(store, &data_dir)?;
    let mut archived: Vec<Option<Result<ArchivedChain, Break>>> = vec![None; shards as usize];
    if let Some(directory) = &args.archives {
        if !directory.is_dir() {
            anyhow::bail!("--archives {}: not a directory", directory.display());
        }
        for (shard, chain) in archive::verify_dir(directory)? {
            match archived.get_mut(shard as usize) {
                Some(slot) => *slot = Some(chain),
                None => anyhow::bail!("{}: archives of shard {shard}, but the data has {shards} shards", directory.display()),
            }
        }
    }
    let mut broken = 0;
    for shard in 0..shards {
        let first_live = first_live_sequence(store, shard)?;
        let line = match &archived[shard as usize] {
            Some(Err(error)) => Err(error.clone()),
            Some(Ok(chain)) => archive::verify_live(store, shard, Some(chain)).map(|head| sound(store, shard, head, Some(chain))),
            // Asked to check the archives, and this shard's are not there: not sound (before
            // session 61 it was reported ok, "not checked").
            None if args.archives.is_some() && first_live > 1 => Err(Break {
                shard,
                sequence: first_live - 1,
                kind: BreakKind::Gap,
                reason: format!("batches 1 to {} are archived, and --archives holds none of this shard's", first_live - 1),
            }),
            None => engine::journal::verify_shard(store, shard, None).map(|head| sound(store, shard, head, None)),
        };
        match &line {
            Ok(line) => writeln!(out, "{line}")?,
            Err(error) => writeln!(out, "shard {shard}: BROKEN at batch {}: {}: {}", error.sequence, error.kind, error.reason)?,
        }
        let journal_sound = line.is_ok();
        if !checkpoints_sound(&shared, shard, out)? || !journal_sound {
            broken += 1;
        }
    }
    // The operators' audit log: its whole chain (a start checks only the newest links).
    let audit_sound = match gateway::portal::audit::verify_store(store) {
        Ok(records) => {
            writeln!(out, "audit log: ok ({records} records)")?;
            true
        }
        Err(reason) => {
            writeln!(out, "audit log: BROKEN: {reason}")?;
            false
        }
    };
    if broken == 0 && audit_sound {
        writeln!(out, "verify: ok ({shards} shards)")?;
    } else if broken == 0 {
        writeln!(out, "verify: the audit log is broken")?;
    } else {
        writeln!(out, "verify: {broken} of {shards} shards broken")?;
    }
    Ok(broken == 0 && audit_sound)
}

/// Checks every checkpoint of `shard` in full (`checkpoint::verify`: every part, the state's
/// decoding, every history blob against its hash) and lists the blobs a shard marked damaged; prints a line, or one per problem. Returns whether all are sound.
fn checkpoints_sound(store: &std::sync::Arc<dyn Store>, shard: u16, out: &mut dyn Write) -> Result<bool> {
    let sequences = engine::checkpoint::list(&**store, shard)?;
    let mut sound = true;
    // A blob shared by several checkpoints is read once.
    let mut checked = std::collections::HashSet::new();
    for sequence in &sequences {
        match engine::checkpoint::verify(store, shard, *sequence, &mut checked) {
            // The journal after it must be what recovery from it would replay: its batch (if
            // live) the head it recorded, the next one linked to it, the journal reaching it
            // (before session 61 a journal cut short below a checkpoint was reported ok, and
            // the server refused to start on it).
            Ok((_, anchor)) => {
                if let Err(error) = engine::journal::verify_shard(&**store, shard, Some(anchor)) {
                    sound = false;
                    writeln!(
                        out,
                        "shard {shard}: CHECKPOINT at batch {sequence} does not meet the journal: BROKEN at batch {}: {}: {}",
                        error.sequence, error.kind, error.reason
                    )?;
                }
            }
            Err(error) => {
                sound = false;
                writeln!(out, "shard {shard}: CHECKPOINT BROKEN: {error}")?;
            }
        }
    }
    for hash in engine::checkpoint::damaged(&**store, shard)? {
        sound = false;
        writeln!(out, "shard {shard}: history blob {} is marked damaged (a shard could not read it back)", engine::ledger::growth::hex(&hash))?;
    }
    if sound {
        writeln!(out, "shard {shard}: {} checkpoints ok (parts and history blobs checked)", sequences.len())?;
    }
    Ok(sound)
}

/// The line of a sound shard: its batches, archived and live, and its head.
fn sound(store: &dyn Store, shard: u16, head: ChainHead, archived: Option<&ArchivedChain>) -> String {
    let first = first_live_sequence(store, shard).unwrap_or(0);
    let live = if first == 0 { 0 } else { head.sequence + 1 - first };
    let archives = match archived {
        Some(chain) => format!(", {} archived in {} files", chain.batches, chain.files),
        None if first > 1 => format!(", batches before {first} archived (not checked: no --archives)"),
        None => String::new(),
    };
    format!("shard {shard}: ok, {} batches ({live} live{archives}), head {}", head.sequence, head.hash_hex())
}

/// The newest of `shard`'s kept checkpoints that is sound in full (`checkpoint::verify`: its
/// parts, the state's decoding, every history blob against its hash), with how many blobs were
/// read; `None` when the shard has no checkpoint (then nothing of it is archived). An error when
/// it has checkpoints and none is sound: archiving its journal would leave recovery nothing to
/// start from.
fn sound_checkpoint(store: &std::sync::Arc<dyn Store>, shard: u16) -> Result<Option<(u64, usize)>> {
    // A blob shared by several checkpoints is read once (`checked` holds those found sound).
    let mut checked = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for sequence in engine::checkpoint::list(&**store, shard)?.into_iter().rev() {
        match engine::checkpoint::verify(store, shard, sequence, &mut checked) {
            Ok(_) => return Ok(Some((sequence, checked.len()))),
            Err(engine::checkpoint::CheckpointError::Storage(error)) => return Err(error.into()),
            Err(error) => problems.push(error.to_string()),
        }
    }
    if problems.is_empty() {
        return Ok(None);
    }
    anyhow::bail!(
        "shard {shard}: no kept checkpoint is sound, so nothing was archived (recovery could not start without the journal): {}. \
         `clearing verify` lists what is damaged",
        problems.join("; ")
    )
}

/// Archives every shard's journal before the date and through its oldest checkpoint, once each
/// shard with checkpoints has a sound one.
pub fn archive(args: ArchiveArgs, out: &mut dyn Write) -> Result<()> {
    let day = clearing_actor::calendar::parse_date(&args.before).ok_or_else(|| anyhow::anyhow!("--before must be YYYY-MM-DD"))?;
    let (config, data_dir) = crate::load(args.config, args.data_dir)?;
    if !data_dir.join("CURRENT").exists() {
        anyhow::bail!("{} is not a database directory", data_dir.display());
    }
    let before = config.calendar().day_start_micros(i64::from(day));
    let shared: std::sync::Arc<dyn Store> = std::sync::Arc::new(
        RocksStore::open_with(&data_dir, config.rows_compaction).with_context(|| format!("opening {} (is the server running on it?)", data_dir.display()))?,
    );
    let store = &*shared;
    let shards = shard_count(store, &data_dir)?;
    // Every shard's recovery must have a sound checkpoint once its batches are gone: checked for
    // all shards before any batch moves.
    for shard in 0..shards {
        if let Some((sequence, blobs)) = sound_checkpoint(&shared, shard)? {
            writeln!(out, "shard {shard}: checkpoint at batch {sequence} is sound (parts and {blobs} history blobs read back)")?;
        }
    }
    for shard in 0..shards {
        match archive::archive_shard(store, shard, before, &args.to).with_context(|| format!("archiving shard {shard}"))? {
            Archived::Moved(manifest) => writeln!(
                out,
                "shard {shard}: archived batches {}..={} into {} (blake3 {})",
                manifest.first_sequence,
                manifest.last_sequence,
                args.to.join(&manifest.file).display(),
                manifest.file_blake3
            )?,
            Archived::Nothing(reason) => writeln!(out, "shard {shard}: {reason}")?,
        }
    }
    Ok(())
}
