//! `reincarnate inspect PATH`: a dataset folder (`dataset.json`) or a checkpoint folder
//! (`config.json` + `model.safetensors`), local or `hf://`, summarised for a person or as JSON.

use crate::error::{Error, Result};
use std::path::Path;

/// The summary `inspect` prints. `json`: a dataset's summary as one JSON object (a checkpoint
/// is always described in text).
pub fn inspect(path: &Path, json: bool) -> Result<String> {
    let text = path.to_string_lossy();
    if crate::reincarnation::is_state_dict(&text) {
        let file = crate::reincarnation::teacher::resolve(&text)?;
        return crate::formats::describe_file(&file);
    }
    let resolved = crate::hub::local_folder(&text, false)?;
    let path = resolved.as_path();
    if path.join("dataset.json").exists() {
        let summary = crate::history::summarize(path)?;
        return Ok(if json {
            serde_json::to_string(&summary)
                .map_err(|e| Error::data(path, format!("summary does not serialise: {e}")))?
                + "\n"
        } else {
            format!("{summary}\n")
        });
    }
    if path.join(crate::checkpoint::CONFIG_FILE).exists() {
        return crate::checkpoint::describe(path);
    }
    Err(Error::Config(format!(
        "{}: neither a dataset folder (dataset.json) nor a checkpoint folder (config.json + model.safetensors)",
        path.display()
    )))
}
