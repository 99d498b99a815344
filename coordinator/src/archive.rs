//! The archive of deleted sagas: JSON lines in a directory, written by retention before it
//! deletes, and read back into the API's views (`geosaga archive show`).
//!
//! A directory holds:
//! - `sagas-YYYY-MM-DD-NODE.jsonl`: one line per saga, `{"saga": {...row...}, "events":
//!   [...log...]}` ([`ArchivedSaga`]), appended by coordinator `NODE` on that (UTC) day.
//! - `definitions.jsonl`: one line per definition version the sagas ran
//!   ([`DefinitionRecord`]), appended before the first saga of that version, so that the
//!   directory alone rebuilds every view.
//!
//! Every write is flushed to disk (`fsync`) before retention deletes what it holds. A saga may
//! appear twice (a coordinator that died between its write and its delete archives the saga
//! again next time): readers take the first line of an id.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sagas::SagaState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{DefinitionRecord, SagaRecord, StoredEvent};
use crate::{Error, Result, SagaView};

/// The file of definitions in an archive directory.
pub const DEFINITIONS_FILE: &str = "definitions.jsonl";

/// One line of an archive: a saga's row and its whole log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedSaga {
    /// The row, as the store held it.
    pub saga: SagaRecord,
    /// Its log, in order.
    pub events: Vec<StoredEvent>,
}

impl ArchivedSaga {
    /// The saga as the API showed it before it was deleted: its row and the state replayed
    /// from its log through `definition` (the version it ran).
    pub fn view(&self, definition: &DefinitionRecord) -> Result<SagaView> {
        let def = Arc::new(sagas::validate::validate_value(&definition.document)?);
        let state =
            SagaState::replay(def, self.events.iter().map(|e| &e.event)).map_err(|source| Error::CorruptLog {
                id: self.saga.id,
                source,
            })?;
        Ok(SagaView {
            record: self.saga.clone(),
            state,
        })
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Store(format!("archive {}: {e}", path.display()))
}

/// Appends to an archive directory.
pub struct ArchiveWriter {
    dir: PathBuf,
    node: String,
    /// The definition versions `definitions.jsonl` holds.
    definitions: HashSet<(String, i64)>,
}

impl ArchiveWriter {
    /// Opens (creating) the archive directory `dir` for coordinator `node`.
    pub fn open(dir: &Path, node: &str) -> Result<ArchiveWriter> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let definitions = read_definitions(dir)?
            .into_iter()
            .map(|d| (d.name, d.version))
            .collect();
        // A node id names a file: keep it to characters every file system takes.
        let node = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(ArchiveWriter {
            dir: dir.to_owned(),
            node,
            definitions,
        })
    }

    /// Appends `sagas` (archived on the UTC day of `now_ms`) and any of `definitions` not
    /// archived yet, and flushes them to disk. Blocking: call it off the async threads.
    pub fn write(&mut self, sagas: &[ArchivedSaga], definitions: &[DefinitionRecord], now_ms: i64) -> Result<()> {
        let new: Vec<&DefinitionRecord> = definitions
            .iter()
            .filter(|d| !self.definitions.contains(&(d.name.clone(), d.version)))
            .collect();
        if !new.is_empty() {
            let path = self.dir.join(DEFINITIONS_FILE);
            append_lines(&path, new.iter().copied())?;
            self.definitions.extend(new.iter().map(|d| (d.name.clone(), d.version)));
        }
        let day = &crate::api::views::rfc3339(now_ms)[..10];
        let path = self.dir.join(format!("sagas-{day}-{}.jsonl", self.node));
        append_lines(&path, sagas.iter())
    }
}

/// Appends one JSON line per item to `path` and syncs it (and, for a new file, its directory).
fn append_lines<T: Serialize>(path: &Path, items: impl Iterator<Item = T>) -> Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(&item).map_err(|e| Error::Store(format!("archive line: {e}")))?);
        text.push('\n');
    }
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    cut_torn_tail(&mut file).map_err(|e| io(path, e))?;
    file.seek(SeekFrom::End(0)).map_err(|e| io(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
    file.sync_data().map_err(|e| io(path, e))?;
    if !existed && let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// Drops a last line without its newline: a write a crash cut off, whose sagas were not
/// deleted (retention deletes only after the sync) and are written again whole.
fn cut_torn_tail(file: &mut File) -> std::io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut text)?;
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    file.set_len(keep as u64)
}

/// Every definition version of the archive at `dir` (none when it has no definitions file).
pub fn read_definitions(dir: &Path) -> Result<Vec<DefinitionRecord>> {
    let path = dir.join(DEFINITIONS_FILE);
    match File::open(&path) {
        Ok(file) => read_lines(&path, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&path, e)),
    }
}

/// Every saga line of the archive at `dir`, file by file in name order (so by day).
pub fn read_sagas(dir: &Path) -> Result<Vec<ArchivedSaga>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sagas-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut sagas = Vec::new();
    for path in files {
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        sagas.extend(read_lines::<ArchivedSaga>(&path, file)?);
    }
    Ok(sagas)
}

/// The archived saga `id` and the definition version it ran, from the archive at `dir`.
pub fn find(dir: &Path, id: Uuid) -> Result<Option<(ArchivedSaga, DefinitionRecord)>> {
    let Some(saga) = read_sagas(dir)?.into_iter().find(|s| s.saga.id == id) else {
        return Ok(None);
    };
    let definition = read_definitions(dir)?
        .into_iter()
        .find(|d| d.name == saga.saga.definition && d.version == saga.saga.version)
        .ok_or_else(|| {
            Error::Store(format!(
                "archive {}: saga {id} ran `{}` version {}, which {DEFINITIONS_FILE} does not hold",
                dir.display(),
                saga.saga.definition,
                saga.saga.version
            ))
        })?;
    Ok(Some((saga, definition)))
}

/// The lines of `file`; a last line without its newline is a write cut off by a crash (its
/// sagas were not deleted, and are archived again) and is left out.
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path, mut file: File) -> Result<Vec<T>> {
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| io(path, e))?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // empty after the last newline, or a cut-off line
    let mut items = Vec::with_capacity(lines.len());
    for (n, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        items.push(
            serde_json::from_str(line)
                .map_err(|e| Error::Store(format!("archive {} line {}: {e}", path.display(), n + 1)))?,
        );
    }
    Ok(items)
}
