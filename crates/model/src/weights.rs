//! Loading (and saving) Hugging Face GPT-2 checkpoints in safetensors format.
//!
//! Names follow `GPT2LMHeadModel`'s state dict, with or without the `transformer.` prefix.
//! `Conv1D` weights are stored `[in, out]`, which is burn's `Linear` layout, so nothing is
//! transposed. f16, bf16 and f64 tensors are converted to f32.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::Dtype;

use crate::config::Gpt2Config;
use crate::error::{Error, Result};
use crate::model::{Attention, Block, Gpt2, LayerNorm, Mlp, attention_scale};

/// A tensor read from a checkpoint, converted to f32.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// Reads every tensor of a safetensors file (or of the shards listed in a
/// `model.safetensors.index.json`) as f32.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, RawTensor>> {
    read_safetensors_as(path, "a safetensors file")
}

/// [`read_safetensors`], naming what the file was needed for (`"the noise file"`, …) when it
/// is missing.
pub fn read_safetensors_as(path: &Path, what: &'static str) -> Result<BTreeMap<String, RawTensor>> {
    if path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
    {
        return read_sharded(path);
    }
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what,
        });
    }
    let invalid = |message: String| Error::InvalidWeights {
        path: path.to_path_buf(),
        message,
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let meta = read_header(&mut file, file_len).map_err(invalid)?;
    let names = meta.offset_keys();
    let mut needed: u64 = 0;
    for name in &names {
        let info = meta.info(name).expect("a name of the header");
        if !matches!(
            info.dtype,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            return Err(invalid(format!(
                "tensor {name}: unsupported dtype {:?} (expected F32, F16, BF16 or F64)",
                info.dtype
            )));
        }
        let numel = info.shape.iter().product::<usize>() as u64;
        needed = needed.saturating_add(numel.saturating_mul(4));
    }
    if let Some(available) = available_memory()
        && needed > available
    {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            needed,
            available,
        });
    }
    // The tensors lie back to back in offset order after the header: each is read straight
    // into its f32 buffer (one copy, no second image of the file in memory).
    let mut out = BTreeMap::new();
    for name in names {
        let info = meta.info(&name).expect("a name of the header");
        let numel = info.shape.iter().product::<usize>();
        let data = read_values(&mut file, info.dtype, numel)
            .map_err(|e| invalid(format!("tensor {name}: {e}")))?;
        out.insert(
            name,
            RawTensor {
                shape: info.shape.clone(),
                data,
            },
        );
    }
    Ok(out)
}

/// Reads and checks a safetensors header (the 8-byte length, the JSON, the tensors' offsets
/// back to back), leaving `file` at the first tensor's first byte.
fn read_header(
    file: &mut std::fs::File,
    file_len: u64,
) -> std::result::Result<safetensors::tensor::Metadata, String> {
    use std::io::Read;
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|_| format!("{file_len} bytes: too short for a safetensors header"))?;
    let n = u64::from_le_bytes(n);
    // safetensors' own limit on the header.
    if n > 100_000_000 || 8 + n > file_len {
        return Err(format!(
            "the header claims {n} bytes, but the file has {file_len} in all"
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| format!("reading the header: {e}"))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| format!("the header: {e}"))?;
    let data_len = meta.data_len() as u64;
    if (8 + n).checked_add(data_len) != Some(file_len) {
        return Err(format!(
            "the header describes {} bytes of tensors, but the file holds {} after the header",
            data_len,
            file_len - 8 - n
        ));
    }
    Ok(meta)
}

/// Reads `numel` values of `dtype` (little-endian) from `file` as f32.
fn read_values(
    file: &mut std::fs::File,
    dtype: Dtype,
    numel: usize,
) -> std::result::Result<Vec<f32>, String> {
    use std::io::Read;
    fn read<T: bytemuck::Pod>(file: &mut std::fs::File, numel: usize) -> std::io::Result<Vec<T>> {
        let mut v = vec![T::zeroed(); numel];
        file.read_exact(bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }
    let e = |e: std::io::Error| e.to_string();
    Ok(match dtype {
        Dtype::F32 => {
            let v: Vec<f32> = read(file, numel).map_err(e)?;
            if cfg!(target_endian = "big") {
                v.into_iter()
                    .map(|x| f32::from_bits(u32::from_le(x.to_bits())))
                    .collect()
            } else {
                v
            }
        }
        Dtype::F16 => read::<u16>(file, numel)
            .map_err(e)?
            .into_iter()
            .map(|b| half::f16::from_bits(u16::from_le(b)).to_f32())
            .collect(),
        Dtype::BF16 => read::<u16>(file, numel)
            .map_err(e)?
            .into_iter()
            .map(|b| half::bf16::from_bits(u16::from_le(b)).to_f32())
            .collect(),
        Dtype::F64 => read::<u64>(file, numel)
            .map_err(e)?
            .into_iter()
            .map(|b| f64::from_bits(u64::from_le(b)) as f32)
            .collect(),
        other => return Err(format!("unsupported dtype {other:?}")),
    })
}

/// The memory the system can still give (Linux's `MemAvailable`), if it says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn read_sharded(index: &Path) -> Result<BTreeMap<String, RawTensor>> {
    let text = read_file(index, "the sharded checkpoint's index")?;
    let invalid = |message: String| Error::InvalidWeights {
        path: index.to_path_buf(),
        message,
    };
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid("no weight_map object".into()))?;
    let mut files: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for f in files {
        out.extend(read_safetensors_as(
            &dir.join(f),
            "a shard named in the checkpoint's index",
        )?);
    }
    Ok(out)
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what,
        });
    }
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Refuses a tensor with a NaN or infinite element, naming it. The test runs on the device (a
/// NaN or infinity makes `Σ 0·x` NaN: optimised passes, where a host loop is slow in
/// unoptimised builds); only a tensor that fails is read back and searched for the element.
fn check_finite(flat: &Tensor<1>, shape: &[usize], name: &str, path: &Path) -> Result<()> {
    let zero = flat.clone().mul_scalar(0.0).sum().into_scalar::<f32>();
    if zero == 0.0 {
        return Ok(());
    }
    let host = flat
        .to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Shape(format!("tensor {name}: {e:?}")))?;
    let (index, value) = first_non_finite(shape, &host).unwrap_or((Vec::new(), zero));
    Err(Error::NonFinite {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        index,
        value,
    })
}

/// The first element of `data` (a tensor of `shape`) that is NaN or infinite: its index, one
/// per dimension, and its value.
pub fn first_non_finite(shape: &[usize], data: &[f32]) -> Option<(Vec<usize>, f32)> {
    let flat = data.iter().position(|x| !x.is_finite())?;
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (i, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            index[i] = rest % n;
            rest /= n;
        }
    }
    Some((index, data[flat]))
}

/// How a checkpoint is checked as it loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Accept NaN and infinite weights (for studying broken checkpoints); by default the first
    /// one is an error naming the tensor and the index.
    pub allow_non_finite: bool,
}

/// Keys a Hugging Face checkpoint may carry that are not parameters: the causal-mask buffers
/// of older `transformers` versions and the tied LM head.
fn is_ignorable(name: &str) -> bool {
    name == "lm_head.weight"
        || (name.starts_with("h.")
            && (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")))
}

/// The parameter names and shapes a config implies, in Hugging Face naming without prefix.
pub fn expected_shapes(c: &Gpt2Config) -> BTreeMap<String, Vec<usize>> {
    let (d, m) = (c.n_embd, c.d_mlp());
    let mut s = BTreeMap::new();
    s.insert("wte.weight".to_string(), vec![c.vocab_size, d]);
    s.insert("wpe.weight".to_string(), vec![c.n_positions, d]);
    for i in 0..c.n_layer {
        let p = format!("h.{i}.");
        for (k, shape) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, m]),
            ("mlp.c_fc.bias", vec![m]),
            ("mlp.c_proj.weight", vec![m, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            s.insert(format!("{p}{k}"), shape);
        }
    }
    s.insert("ln_f.weight".to_string(), vec![d]);
    s.insert("ln_f.bias".to_string(), vec![d]);
    s
}

impl Gpt2 {
    /// Loads a checkpoint's weights into a model of the given configuration.
    ///
    /// Every missing, unexpected or misshaped tensor is listed in the error; a NaN or
    /// infinite weight is an error naming it ([`Gpt2::from_safetensors_with`] can allow them).
    pub fn from_safetensors(config: &Gpt2Config, path: &Path, device: &Device) -> Result<Self> {
        Self::from_safetensors_with(config, path, device, LoadOptions::default())
    }

    /// [`Gpt2::from_safetensors`] with explicit [`LoadOptions`].
    pub fn from_safetensors_with(
        config: &Gpt2Config,
        path: &Path,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self> {
        config.validate()?;
        let raw = read_safetensors_as(path, "the model's weights (model.safetensors)")?;
        Self::from_raw_with(config, raw, path, device, options)
    }

    /// Builds the model from tensors named as in a Hugging Face checkpoint, refusing
    /// non-finite weights.
    pub fn from_raw(
        config: &Gpt2Config,
        raw: BTreeMap<String, RawTensor>,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        Self::from_raw_with(config, raw, path, device, LoadOptions::default())
    }

    /// [`Gpt2::from_raw`] with explicit [`LoadOptions`].
    pub fn from_raw_with(
        config: &Gpt2Config,
        raw: BTreeMap<String, RawTensor>,
        path: &Path,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self> {
        config.validate()?;
        let expected = expected_shapes(config);
        let mut problems = Vec::new();
        let mut tensors: HashMap<String, (String, RawTensor)> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, t) in raw {
            let key = name
                .strip_prefix("transformer.")
                .unwrap_or(&name)
                .to_string();
            seen.insert(key.clone());
            match expected.get(&key) {
                Some(shape) if *shape != t.shape => problems.push(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.shape
                )),
                Some(_) => {
                    if tensors.insert(key.clone(), (name, t)).is_some() {
                        problems.push(format!(
                            "tensor {key} appears twice (with and without the transformer. prefix)"
                        ));
                    }
                }
                None if is_ignorable(&key) => {}
                None => problems.push(format!("unexpected tensor {name} {:?}", t.shape)),
            }
        }
        for name in expected.keys() {
            if !seen.contains(name) {
                problems.push(format!("missing tensor {name} {:?}", expected[name]));
            }
        }
        if !problems.is_empty() {
            return Err(Error::WeightMismatch {
                path: path.to_path_buf(),
                problems,
            });
        }
        // Each tensor goes to the device as it is taken, and is checked finite there.
        let mut take = |name: String| -> Result<(Tensor<1>, Vec<usize>)> {
            let (stored, t) = tensors.remove(&name).expect("checked above");
            let n = t.data.len();
            let flat = Tensor::<1>::from_data(TensorData::new(t.data, [n]), device);
            if !options.allow_non_finite {
                check_finite(&flat, &t.shape, &stored, path)?;
            }
            Ok((flat, t.shape))
        };
        let t1 = |(flat, _): (Tensor<1>, Vec<usize>)| Param::from_tensor(flat);
        let t2 = |(flat, shape): (Tensor<1>, Vec<usize>)| {
            Param::from_tensor(flat.reshape([shape[0], shape[1]]))
        };
        let eps = config.layer_norm_epsilon;
        let ln = |prefix: &str, take: &mut dyn FnMut(String) -> Result<(Tensor<1>, Vec<usize>)>| {
            Ok::<_, Error>(LayerNorm {
                gamma: t1(take(format!("{prefix}.weight"))?),
                beta: t1(take(format!("{prefix}.bias"))?),
                epsilon: eps,
            })
        };
        let linear =
            |prefix: &str, take: &mut dyn FnMut(String) -> Result<(Tensor<1>, Vec<usize>)>| {
                Ok::<_, Error>(Linear {
                    weight: t2(take(format!("{prefix}.weight"))?),
                    bias: Some(t1(take(format!("{prefix}.bias"))?)),
                })
            };
        let mut blocks = Vec::with_capacity(config.n_layer);
        for layer in 0..config.n_layer {
            let p = format!("h.{layer}");
            blocks.push(Block {
                ln_1: ln(&format!("{p}.ln_1"), &mut take)?,
                attn: Attention {
                    c_attn: linear(&format!("{p}.attn.c_attn"), &mut take)?,
                    c_proj: linear(&format!("{p}.attn.c_proj"), &mut take)?,
                    n_head: config.n_head,
                    scale: attention_scale(config, layer),
                },
                ln_2: ln(&format!("{p}.ln_2"), &mut take)?,
                mlp: Mlp {
                    c_fc: linear(&format!("{p}.mlp.c_fc"), &mut take)?,
                    c_proj: linear(&format!("{p}.mlp.c_proj"), &mut take)?,
                    activation: config.activation,
                },
                layer,
            });
        }
        let wte = t2(take("wte.weight".into())?);
        Ok(Gpt2 {
            w_u: crate::model::unembedding(&wte.val()),
            b_u: None,
            wte,
            wpe: t2(take("wpe.weight".into())?),
            blocks,
            ln_f: ln("ln_f", &mut take)?,
            config: config.clone(),
            processing: crate::process::WeightProcessing::none(),
        })
    }

    /// The weights as Hugging Face names them (with the `transformer.` prefix) and their values.
    /// The unembedding is not among them (Hugging Face ties it to `wte`), so this describes a
    /// processed model only in part; [`Gpt2::save_safetensors`] refuses processed models.
    pub fn to_raw(&self) -> BTreeMap<String, RawTensor> {
        fn raw<const D: usize>(t: Tensor<D>) -> RawTensor {
            let shape = t.dims().to_vec();
            let data = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 data");
            RawTensor { shape, data }
        }
        let mut out = BTreeMap::new();
        let mut put = |name: String, t: RawTensor| {
            out.insert(format!("transformer.{name}"), t);
        };
        put("wte.weight".into(), raw(self.wte.val()));
        put("wpe.weight".into(), raw(self.wpe.val()));
        let lin = |l: &Linear| {
            (
                raw(l.weight.val()),
                raw(l.bias.as_ref().expect("GPT-2 linears have biases").val()),
            )
        };
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("h.{i}");
            put(format!("{p}.ln_1.weight"), raw(b.ln_1.gamma.val()));
            put(format!("{p}.ln_1.bias"), raw(b.ln_1.beta.val()));
            put(format!("{p}.ln_2.weight"), raw(b.ln_2.gamma.val()));
            put(format!("{p}.ln_2.bias"), raw(b.ln_2.beta.val()));
            for (name, l) in [
                ("attn.c_attn", &b.attn.c_attn),
                ("attn.c_proj", &b.attn.c_proj),
                ("mlp.c_fc", &b.mlp.c_fc),
                ("mlp.c_proj", &b.mlp.c_proj),
            ] {
                let (w, bias) = lin(l);
                put(format!("{p}.{name}.weight"), w);
                put(format!("{p}.{name}.bias"), bias);
            }
        }
        put("ln_f.weight".into(), raw(self.ln_f.gamma.val()));
        put("ln_f.bias".into(), raw(self.ln_f.beta.val()));
        out
    }

    /// Writes the weights as `model.safetensors` in Hugging Face naming (f32).
    ///
    /// # Errors
    /// A model whose weights were processed ([`Gpt2::process_weights`]): its unembedding no
    /// longer equals `wte`, so a Hugging Face checkpoint cannot hold it.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        if !self.processing.is_none() {
            return Err(Error::InvalidOption(format!(
                "cannot save {}: its weights were processed ({:?}) and no longer form a Hugging Face GPT-2 checkpoint; save the unprocessed model",
                path.display(),
                self.processing
            )));
        }
        write_safetensors(&self.to_raw(), path)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed), in the
    /// Hugging Face layout that `transformers` and [`crate::load`] read.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, self.config.to_hf_json())
            .map_err(|source| Error::Write { path: cfg, source })?;
        self.save_safetensors(&dir.join("model.safetensors"))
    }

    /// Number of scalar parameters, the tied LM head (`w_u`, a copy of `wte`) counted once as
    /// Hugging Face counts it.
    pub fn num_params(&self) -> usize {
        // `w_u` is the tied LM head: count it once, with `wte`.
        burn::module::Module::num_params(self) - self.w_u.val().shape().num_elements()
    }
}

/// Writes f32 tensors to a safetensors file.
pub fn write_safetensors(tensors: &BTreeMap<String, RawTensor>, path: &Path) -> Result<()> {
    write_safetensors_as(tensors, path, Dtype::F32)
}

/// `data` as `dtype` (F32, F16 or BF16) little-endian bytes; f32 on a little-endian machine is
/// the values as they are, borrowed.
fn encode(dtype: Dtype, data: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    match dtype {
        Dtype::F16 => data
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
        Dtype::BF16 => data
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
        _ if cfg!(target_endian = "little") => bytemuck::cast_slice(data).into(),
        _ => data
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }
}

/// Writes tensors to a safetensors file, stored as `dtype` (F32, F16 or BF16), tensor by
/// tensor.
pub fn write_safetensors_as(
    tensors: &BTreeMap<String, RawTensor>,
    path: &Path,
    dtype: Dtype,
) -> Result<()> {
    let invalid = |message: String| Error::InvalidWeights {
        path: PathBuf::from(path),
        message,
    };
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(invalid(format!(
            "cannot write dtype {dtype:?}: expected F32, F16 or BF16"
        )));
    }
    // f32 on a little-endian machine is written from the values as they are (no copy); the
    // file is written tensor by tensor (no image of it in memory).
    let bytes: Vec<(String, std::borrow::Cow<'_, [u8]>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), encode(dtype, &t.data), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(dtype, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let write_error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => write_error(source),
        other => invalid(other.to_string()),
    })?;
    // safetensors writes a private temporary file and renames it: make the checkpoint
    // readable by others, as a file written with `std::fs::write` is.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(write_error)?;
    }
    Ok(())
}
