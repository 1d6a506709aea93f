//! Memory-mapped safetensors checkpoints, including block-wise FP8 dequantization.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use safetensors::Dtype as StDtype;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fp8::Fp8Weight;

/// Where a model's weights come from: a checkpoint directory ([`Checkpoint`]) or a
/// generator ([`crate::synthetic::SyntheticWeights`]).
pub trait WeightSource: Sync {
    /// The resolved configuration.
    fn config(&self) -> &ModelConfig;

    /// Whether the source has a tensor.
    fn contains(&self, name: &str) -> bool;

    /// Loads `name` with the expected `shape` in `dtype` on `device`; FP8 weights are
    /// dequantized with their block scales.
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor>;

    /// The FP8 weight `name` as stored (bytes plus block scales) on `device`, or `None`
    /// when `name` is not stored as FP8.
    fn fp8(&self, name: &str, shape: &[usize], device: &Device) -> Result<Option<Fp8Weight>>;
}

/// A Hugging Face model directory: `config.json` plus one or more `.safetensors` files.
pub struct Checkpoint {
    dir: PathBuf,
    config: ModelConfig,
    files: Vec<PathBuf>,
    st: MmapedSafetensors,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The weight files of a model directory: the shards named by
/// `model.safetensors.index.json`, else `model.safetensors`, else every `*.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| ModelError::io(format!("cannot read {}", index.display()), e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Weights {
                dir: dir.to_owned(),
                reason: format!("{} is not valid JSON: {e}", index.display()),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Weights {
                dir: dir.to_owned(),
                reason: format!("{} has no weight_map object", index.display()),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(format!("cannot list {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Weights {
            dir: dir.to_owned(),
            reason: "no .safetensors files".into(),
        });
    }
    Ok(files)
}

impl Checkpoint {
    /// Opens (memory-maps) a model directory and reads its configuration.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        let config = ModelConfig::from_dir(&dir)?;
        let files = weight_files(&dir)?;
        for f in &files {
            if !f.exists() {
                return Err(ModelError::Weights {
                    dir: dir.clone(),
                    reason: format!("{} (listed in the index) does not exist", f.display()),
                });
            }
        }
        // SAFETY: the files are mapped read-only; like every safetensors loader we rely on
        // them not being modified while the model is loaded.
        let st = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| ModelError::Weights {
            dir: dir.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            dir,
            config,
            files,
            st,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Every tensor name with its stored dtype and shape, sorted by name.
    pub fn tensors(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut v: Vec<_> = self
            .st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, format!("{:?}", t.dtype()), t.shape().to_vec()))
            .collect();
        v.sort();
        v
    }

    /// The stored dtype, shape and raw little-endian bytes of a tensor.
    pub fn raw(&self, name: &str) -> Result<(safetensors::Dtype, Vec<usize>, &[u8])> {
        let view = self.st.get(name).map_err(|_| ModelError::MissingTensor {
            name: name.to_owned(),
        })?;
        Ok((view.dtype(), view.shape().to_vec(), view.data()))
    }

    /// Whether the checkpoint has a tensor.
    pub fn contains(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    fn view(&self, name: &str, shape: &[usize]) -> Result<safetensors::tensor::TensorView<'_>> {
        let view = self.st.get(name).map_err(|_| ModelError::MissingTensor {
            name: name.to_owned(),
        })?;
        if view.shape() != shape {
            return Err(ModelError::WrongShape {
                name: name.to_owned(),
                got: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(view)
    }

    /// Loads `name`, checks its shape, dequantizes FP8 weights with their block scales
    /// (`{name}_scale_inv`, a multiplier per block), and converts to `dtype` on `device`.
    pub fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let view = self.view(name, shape)?;
        match view.dtype() {
            StDtype::BF16 | StDtype::F16 | StDtype::F32 => {
                Ok(self.st.load(name, device)?.to_dtype(dtype)?)
            }
            StDtype::F8_E4M3 => self
                .dequantize_fp8(name, shape)?
                .to_dtype(dtype)?
                .to_device(device)
                .map_err(Into::into),
            other => Err(ModelError::BadDType {
                name: name.to_owned(),
                dtype: format!("{other:?}"),
            }),
        }
    }

    /// The block size of the FP8 weights.
    fn fp8_block(&self) -> [usize; 2] {
        self.config.fp8.map(|q| q.block).unwrap_or([128, 128])
    }

    /// Checks the `{name}_scale_inv` companion of an FP8 weight; returns its name and the
    /// matrix shape.
    fn scale_of(&self, name: &str, shape: &[usize]) -> Result<(String, [usize; 2])> {
        let &[rows, cols] = shape else {
            return Err(ModelError::BadDType {
                name: name.to_owned(),
                dtype: "F8_E4M3 (only 2-D weights can be block-quantized)".into(),
            });
        };
        let [br, bc] = self.fp8_block();
        let scale_name = format!("{name}_scale_inv");
        let scale_view = self
            .st
            .get(&scale_name)
            .map_err(|_| ModelError::MissingTensor {
                name: scale_name.clone(),
            })?;
        let expected = [rows.div_ceil(br), cols.div_ceil(bc)];
        if scale_view.shape() != expected {
            return Err(ModelError::WrongShape {
                name: scale_name,
                got: scale_view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok((scale_name, [rows, cols]))
    }

    /// The FP8 weight `name` as stored (bytes plus block scales, on `device`), or `None`
    /// if it is not stored as FP8.
    pub fn fp8(&self, name: &str, shape: &[usize], device: &Device) -> Result<Option<Fp8Weight>> {
        let view = self.view(name, shape)?;
        if view.dtype() != StDtype::F8_E4M3 {
            return Ok(None);
        }
        let (scale_name, dims) = self.scale_of(name, shape)?;
        let scales = self
            .st
            .load(&scale_name, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Fp8Weight::from_parts(view.data(), &scales, dims, self.fp8_block(), device).map(Some)
    }

    fn dequantize_fp8(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (scale_name, [rows, cols]) = self.scale_of(name, shape)?;
        let [br, bc] = self.fp8_block();
        let expected = [rows.div_ceil(br), cols.div_ceil(bc)];
        let cpu = Device::Cpu;
        let q = self
            .st
            .load(name, &cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let s = self
            .st
            .load(&scale_name, &cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut out = q;
        for r in 0..rows {
            let srow = &s[(r / br) * expected[1]..(r / br + 1) * expected[1]];
            for (c, w) in out[r * cols..(r + 1) * cols].iter_mut().enumerate() {
                *w *= srow[c / bc];
            }
        }
        Ok(Tensor::from_vec(out, (rows, cols), &cpu)?)
    }
}

impl WeightSource for Checkpoint {
    fn config(&self) -> &ModelConfig {
        Checkpoint::config(self)
    }

    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }

    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Checkpoint::tensor(self, name, shape, dtype, device)
    }

    fn fp8(&self, name: &str, shape: &[usize], device: &Device) -> Result<Option<Fp8Weight>> {
        Checkpoint::fp8(self, name, shape, device)
    }
}
