//! A Hugging Face model directory: `config.json` plus safetensors shards.
//!
//! The architecture and hyper-parameters live in `config.json`, kept as raw JSON because
//! its keys differ per architecture and lowering reads what it needs. The weights live in
//! one `model.safetensors` or in several shards; `model.safetensors.index.json` then maps
//! each tensor name to its shard. Shard names come from a file we do not trust, so each
//! must be a plain file name inside the directory (no separators, no `..`). Without an
//! index, every `*.safetensors` file in the directory is a shard. Either way each tensor
//! must live in exactly one shard, so a name always means one set of bytes.

use super::{SafeTensorInfo, SafeTensorsError, SafeTensorsFile, TensorView};
use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The file holding the model's configuration.
pub const CONFIG_FILE: &str = "config.json";
/// The file mapping tensor names to shards.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// An opened Hugging Face model directory with every shard mapped.
#[derive(Debug)]
pub struct HfDir {
    dir: PathBuf,
    config: serde_json::Value,
    shards: Vec<SafeTensorsFile>,
    /// Tensor name → (shard index, tensor index in that shard's header), in shard order.
    tensors: Vec<(usize, usize)>,
    by_name: HashMap<String, usize>,
}

impl HfDir {
    /// Reads `config.json`, finds the shards (through the index if there is one) and maps them.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfDir, SafeTensorsError> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(SafeTensorsError::MissingConfig { dir });
        }
        let config = read_json(&config_path)?;
        let index_path = dir.join(INDEX_FILE);
        let weight_map = if index_path.is_file() { Some(read_weight_map(&index_path)?) } else { None };

        let shard_names = match &weight_map {
            Some(map) => {
                let mut names: Vec<String> = Vec::new();
                for shard in map.iter().map(|(_, s)| s) {
                    if !is_plain_file_name(shard) {
                        return Err(SafeTensorsError::BadShardName { shard: shard.clone() });
                    }
                    if !names.contains(shard) {
                        names.push(shard.clone());
                    }
                }
                names.sort();
                names
            }
            None => list_safetensors(&dir)?,
        };
        if shard_names.is_empty() {
            return Err(SafeTensorsError::NoShards { dir });
        }

        let mut shards = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(SafeTensorsError::MissingShard { path });
            }
            shards.push(SafeTensorsFile::open(&path)?);
        }

        let mut tensors = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (si, shard) in shards.iter().enumerate() {
            for (ti, t) in shard.header().tensors().iter().enumerate() {
                if let Some(&prev) = by_name.get(t.name()) {
                    let first = tensors.get(prev).map_or(0, |&(s, _)| s);
                    return Err(SafeTensorsError::TensorInTwoShards {
                        tensor: t.name().to_owned(),
                        first: shard_names.get(first).cloned().unwrap_or_default(),
                        second: shard_names.get(si).cloned().unwrap_or_default(),
                    });
                }
                by_name.insert(t.name().to_owned(), tensors.len());
                tensors.push((si, ti));
            }
        }
        for (tensor, shard) in weight_map.iter().flatten() {
            let found = by_name.get(tensor).and_then(|&i| tensors.get(i)).and_then(|&(s, _)| shard_names.get(s));
            if found != Some(shard) {
                return Err(SafeTensorsError::NotInShard { tensor: tensor.clone(), shard: shard.clone() });
            }
        }
        tracing::debug!(dir = %dir.display(), shards = shards.len(), tensors = tensors.len(), "opened HF model directory");
        Ok(HfDir { dir, config, shards, tensors, by_name })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`, as parsed JSON.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The mapped shards, in file-name order.
    pub fn shards(&self) -> &[SafeTensorsFile] {
        &self.shards
    }

    /// Number of tensors over all shards.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no shard holds a tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Every tensor's header entry, shard by shard in header order.
    pub fn tensor_infos(&self) -> impl Iterator<Item = &SafeTensorInfo> {
        self.tensors.iter().filter_map(|&(s, t)| self.shards.get(s)?.header().tensors().get(t))
    }

    /// Every tensor's name, in the order of [`HfDir::tensor_infos`].
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensor_infos().map(SafeTensorInfo::name)
    }

    /// The header entry of the tensor named `name`, and the shard holding it.
    pub fn tensor_info(&self, name: &str) -> Option<(&SafeTensorInfo, &SafeTensorsFile)> {
        let &(s, t) = self.tensors.get(*self.by_name.get(name)?)?;
        let shard = self.shards.get(s)?;
        Some((shard.header().tensors().get(t)?, shard))
    }

    /// The tensor named `name`: dtype, row-major shape and bytes. Errors if it is absent or
    /// its dtype is not one apr-ir computes with.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, SafeTensorsError> {
        let (_, shard) =
            self.tensor_info(name).ok_or_else(|| SafeTensorsError::MissingTensor { tensor: name.to_owned() })?;
        shard.tensor(name)
    }
}

/// True for a name that names a file directly inside a directory: one normal component.
fn is_plain_file_name(name: &str) -> bool {
    let mut comps = Path::new(name).components();
    !name.contains(['/', '\\', '\0'])
        && matches!(comps.next(), Some(Component::Normal(c)) if c == name)
        && comps.next().is_none()
}

fn read_json(path: &Path) -> Result<serde_json::Value, SafeTensorsError> {
    let text = fs::read(path).map_err(|source| SafeTensorsError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&text)
        .map_err(|e| SafeTensorsError::BadJson { path: path.to_path_buf(), reason: e.to_string() })
}

/// The index's `weight_map`, tensor → shard file name, in file order.
fn read_weight_map(path: &Path) -> Result<Vec<(String, String)>, SafeTensorsError> {
    let bad = |reason: String| SafeTensorsError::BadJson { path: path.to_path_buf(), reason };
    let json = read_json(path)?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no weight_map object".into()))?;
    map.iter()
        .map(|(tensor, shard)| match shard.as_str() {
            Some(s) => Ok((tensor.clone(), s.to_owned())),
            None => Err(bad(format!("weight_map entry {tensor} is {shard}, not a file name"))),
        })
        .collect()
}

/// File names of the `*.safetensors` files in `dir`, sorted.
fn list_safetensors(dir: &Path) -> Result<Vec<String>, SafeTensorsError> {
    let io = |source| SafeTensorsError::Io { path: dir.to_path_buf(), source };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".safetensors") && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::is_plain_file_name;

    #[test]
    fn shard_names_must_be_plain() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in ["", ".", "..", "../x.safetensors", "/etc/passwd", "a/b", "a\\b", "./a"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}
