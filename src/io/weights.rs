//! Weight files: reading safetensors (any float dtype, upcast to f32) with
//! one-line errors that name the file and the tensor, decoder metadata, the
//! default locations, and importing PyTorch `.pth` checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::decoder::Decoder;
use crate::encoder::ENCODER_CONVS;
use crate::johnson::TransformerNet;

/// Default file names looked up in `$ADAIN_WEIGHTS/` and the project's `weights/`.
pub const VGG_FILE: &str = "vgg19-relu4_1.safetensors";
pub const DECODER_FILE: &str = "decoder.safetensors";

/// `__metadata__` keys of a decoder file.
pub const META_FORMAT: &str = "format";
pub const META_FORMAT_VERSION: &str = "format_version";
pub const META_ARCH: &str = "architecture";
pub const META_ENCODER_SHA: &str = "encoder_sha256";
pub const META_RECIPE: &str = "recipe";
pub const META_ITER: &str = "iteration";
/// `__metadata__` key of every weight file the project writes: the hex sha256
/// of the file's data section (every tensor's bytes, in file order), checked
/// on load so that a flipped byte is an error, never a silently other model.
pub const META_TENSORS_SHA: &str = "tensors_sha256";
/// Whole-file sha256 of the weight files the project ships but did not write
/// (the ImageNet VGG-19 encoder, published as it came): such a file has no
/// `tensors_sha256`, and is verified by its whole-file hash instead.
pub const SHIPPED_FOREIGN_FILES: [&str; 1] =
    ["9da04f3dd2ff4d727cfd77091626b7890a538a7f4d3a121fef992722cdb094da"];
pub const DECODER_FORMAT: &str = "adain-decoder";
pub const FORMAT_VERSION: &str = "1";
pub const ARCHITECTURE: &str = "adain-decoder/vgg19-relu4_1 (pytorch-AdaIN keys)";

/// Tensors of a weight file, all f32, plus its `__metadata__`.
pub struct WeightFile {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl WeightFile {
    /// Reads a safetensors file. A `.pth`, a truncated file or anything else
    /// gives a one-line error naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses safetensors bytes; `path` names them in errors (and in `self.path`).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let p = path.display();
        // Parse as safetensors first: its header starts with a little-endian
        // length, whose first byte can be anything (0x80 included), so the
        // PyTorch magic is only looked at to explain a file that fails.
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
            if looks_like_pytorch(bytes) {
                anyhow!("{p}: is a PyTorch checkpoint, not safetensors: convert it with `adain convert {p} OUT.safetensors`")
            } else {
                anyhow!("{p}: not a valid safetensors file ({e})")
            }
        })?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("{p}: not a valid safetensors file ({e})"))?;
        match meta.metadata().as_ref().and_then(|m| m.get(META_TENSORS_SHA)) {
            Some(want) => {
                let got = hex_sha256(data_section(bytes));
                if *want != got {
                    bail!(
                        "{p}: corrupted: its tensor data has sha256 {}, but the file records {} \
                         (a damaged copy: download or export it again)",
                        short(&got),
                        short(want)
                    );
                }
            }
            None if SHIPPED_FOREIGN_FILES.contains(&hex_sha256(bytes).as_str()) => {}
            None => tracing::warn!(
                "{p}: no `{META_TENSORS_SHA}` checksum (an older or foreign file): loaded unverified"
            ),
        }
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::F64 => DType::F64,
                other => bail!("{p}: tensor `{name}` has dtype {other:?}, expected a float type"),
            };
            let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| anyhow!("{p}: tensor `{name}`: {e}"))?;
            tensors.insert(name, t);
        }
        let metadata = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self {
            path: path.to_owned(),
            tensors,
            metadata,
        })
    }

    /// Checks that every expected tensor is present with its shape.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        let p = self.path.display();
        for (name, shape) in expected {
            match self.tensors.get(name) {
                None => {
                    bail!("{p}: missing tensor `{name}` (is this the right kind of weight file?)")
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    bail!(
                        "{p}: tensor `{name}` has shape {:?}, expected {:?}",
                        t.dims(),
                        shape
                    )
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The tensors moved to `device`, for a `VarBuilder::from_tensors`.
    pub fn on(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        self.tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(device)?)))
            .collect()
    }
}

/// (key, shape) of every tensor the encoder needs.
pub fn encoder_shapes() -> Vec<(String, Vec<usize>)> {
    ENCODER_CONVS
        .iter()
        .flat_map(|&(k, i, o, ks)| {
            [
                (format!("{k}.weight"), vec![o, i, ks, ks]),
                (format!("{k}.bias"), vec![o]),
            ]
        })
        .collect()
}

/// Hex sha256 of a file (identifies the encoder a decoder was trained with).
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(hex_sha256(&bytes))
}

/// Hex sha256 of bytes.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The data section of safetensors bytes (after the 8-byte length and the
/// header), which the caller has already parsed, so the length is in range.
fn data_section(bytes: &[u8]) -> &[u8] {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    &bytes[8 + n..]
}

/// Writes a decoder (or any named tensors) as safetensors with metadata and
/// the [`META_TENSORS_SHA`] checksum of its tensor data, atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    overwrite: bool,
) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let mut meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    meta.remove(META_TENSORS_SHA);
    let serialize = |meta: HashMap<String, String>| {
        safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
            .with_context(|| format!("{}: cannot serialise", path.display()))
    };
    // The data section does not depend on the metadata (tensors are laid out
    // by dtype and name), so the checksum of a first serialisation holds for
    // the second, which records it.
    let sum = hex_sha256(data_section(&serialize(meta.clone())?));
    meta.insert(META_TENSORS_SHA.into(), sum.clone());
    let bytes = serialize(meta)?;
    crate::atomic::write_with(path, overwrite, |w| {
        Ok(std::io::Write::write_all(w, &bytes)?)
    })
}

/// Metadata for a decoder trained (or converted) against `encoder_sha256`.
pub fn decoder_metadata(
    encoder_sha256: &str,
    recipe: &str,
    iteration: u64,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (META_FORMAT.into(), DECODER_FORMAT.into()),
        (META_FORMAT_VERSION.into(), FORMAT_VERSION.into()),
        (META_ARCH.into(), ARCHITECTURE.into()),
        (META_ENCODER_SHA.into(), encoder_sha256.into()),
        (META_RECIPE.into(), recipe.into()),
        (META_ITER.into(), iteration.to_string()),
    ])
}

/// Warns when `decoder` names (in its metadata) an encoder other than the one
/// at `vgg`, whose sha256 is `vgg_sha`: a decoder only fits its encoder.
pub fn warn_if_other_encoder(decoder: &WeightFile, vgg: &Path, vgg_sha: &str) {
    if let Some(want) = decoder.metadata.get(META_ENCODER_SHA) {
        if want != vgg_sha {
            tracing::warn!(
                "{}: decoder was trained with encoder sha256 {}, but {} has {}: results may be poor",
                decoder.path.display(),
                short(want),
                vgg.display(),
                short(vgg_sha)
            );
        }
    }
}

/// The first 12 hex digits of a sha256, for messages.
fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Finds a weight file: the explicit flag, else `$ADAIN_WEIGHTS/<file>` when
/// that variable is set (and then only there: a user who points it somewhere
/// means that folder, and a missing file there must not be replaced silently by
/// the project's), else `weights/<file>` next to the binary's project (the
/// nearest ancestor of the executable that has it: `target/release/adain`
/// finds the project's `weights/`). Returns the candidates looked at when
/// nothing is found.
pub fn locate(flag: Option<&Path>, file: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(dir) = std::env::var_os("ADAIN_WEIGHTS") {
        let p = PathBuf::from(dir).join(file);
        return if p.is_file() { Ok(p) } else { Err(vec![p]) };
    }
    let mut tried = Vec::new();
    let exe = std::env::current_exe().unwrap_or_default();
    for root in exe.ancestors().skip(1) {
        let p = root.join("weights").join(file);
        if p.is_file() {
            return Ok(p);
        }
        if root.join("Cargo.toml").is_file() {
            tried.push(p);
        }
    }
    Err(tried)
}

/// Where [`locate`] looked, for an error message: the flag, `$ADAIN_WEIGHTS`,
/// and the `weights/` folders of the checkout above the executable, if any
/// (an installed binary has none).
pub fn searched(flag: &str, tried: &[PathBuf]) -> String {
    let mut parts = vec![flag.to_string()];
    if std::env::var_os("ADAIN_WEIGHTS").is_none() {
        parts.push("$ADAIN_WEIGHTS (not set)".into());
        if tried.is_empty() {
            parts.push("no checkout's weights/ above this executable".into());
        }
    }
    parts.extend(tried.iter().map(|p| p.display().to_string()));
    parts.join(", ")
}

/// The error for a decoder not found: where it looked and how to get one.
pub fn no_decoder_help(tried: &[PathBuf]) -> String {
    format!(
        "no decoder found (looked for {}): train one with `adain-train --content coco --style wikiart` \
         and `adain-train export RUN_DIR --out weights/{f}`, or convert a PyTorch decoder.pth with `adain convert decoder.pth weights/{f}`",
        searched("--decoder", tried),
        f = DECODER_FILE
    )
}

/// Where a weight file comes from: a file, or the copy built into the binary
/// (the default-on `embed-weights` feature), so that an installed `adain`
/// works from any directory.
#[derive(Debug, Clone)]
pub enum WeightSource {
    File(PathBuf),
    Embedded {
        file: &'static str,
        bytes: &'static [u8],
    },
}

impl WeightSource {
    pub fn load(&self) -> Result<WeightFile> {
        match self {
            Self::File(p) => WeightFile::load(p),
            Self::Embedded { bytes, .. } => WeightFile::from_bytes(bytes, &self.label()),
        }
    }
    /// The file, or `built-in weights/FILE` for an embedded copy.
    pub fn label(&self) -> PathBuf {
        match self {
            Self::File(p) => p.clone(),
            Self::Embedded { file, .. } => PathBuf::from(format!("built-in weights/{file}")),
        }
    }
    pub fn sha256(&self) -> Result<String> {
        match self {
            Self::File(p) => sha256_file(p),
            Self::Embedded { bytes, .. } => Ok(hex_sha256(bytes)),
        }
    }
}

/// The published weights built into the binary (`embed-weights`, on by default).
#[cfg(feature = "embed-weights")]
pub fn embedded(file: &str) -> Option<WeightSource> {
    static VGG: &[u8] = include_bytes!("../../weights/vgg19-relu4_1.safetensors");
    static DECODER: &[u8] = include_bytes!("../../weights/decoder.safetensors");
    match file {
        VGG_FILE => Some(WeightSource::Embedded {
            file: VGG_FILE,
            bytes: VGG,
        }),
        DECODER_FILE => Some(WeightSource::Embedded {
            file: DECODER_FILE,
            bytes: DECODER,
        }),
        _ => None,
    }
}

/// The published weights built into the binary (none in this build).
#[cfg(not(feature = "embed-weights"))]
pub fn embedded(_file: &str) -> Option<WeightSource> {
    None
}

/// [`locate`], then the built-in copy: the flag, `$ADAIN_WEIGHTS` (only
/// there), a checkout's `weights/` above the executable (a newer export there
/// wins over the copy built in), else the embedded file.
pub fn locate_source(
    flag: Option<&Path>,
    file: &str,
) -> std::result::Result<WeightSource, Vec<PathBuf>> {
    match locate(flag, file) {
        Ok(p) => Ok(WeightSource::File(p)),
        Err(tried) if flag.is_none() && std::env::var_os("ADAIN_WEIGHTS").is_none() => {
            embedded(file).ok_or(tried)
        }
        Err(tried) => Err(tried),
    }
}

/// Where the VGG encoder is (see [`locate_source`]), or an error saying where it looked.
pub fn locate_encoder(flag: Option<&Path>) -> Result<WeightSource> {
    let src = locate_source(flag, VGG_FILE).map_err(|tried| {
        anyhow!(
            "VGG encoder not found (looked for {}): run scripts/setup.sh, pass --vgg FILE or set ADAIN_WEIGHTS=DIR",
            searched("--vgg", &tried)
        )
    })?;
    if let WeightSource::File(p) = &src {
        if !p.is_file() {
            bail!("{}: no such encoder file", p.display());
        }
    }
    Ok(src)
}

/// The decoder (see [`locate_source`]), or an error saying where it looked
/// and how to get one.
pub fn locate_decoder(flag: Option<&Path>) -> Result<WeightSource> {
    let src = locate_source(flag, DECODER_FILE).map_err(|t| anyhow!(no_decoder_help(&t)))?;
    if let WeightSource::File(p) = &src {
        if !p.is_file() {
            bail!("{}: no such decoder file", p.display());
        }
    }
    Ok(src)
}

/// Encoder and decoder for stylizing.
pub fn locate_model(
    vgg: Option<&Path>,
    decoder: Option<&Path>,
) -> Result<(WeightSource, WeightSource)> {
    Ok((locate_encoder(vgg)?, locate_decoder(decoder)?))
}

/// The VGG encoder: located, read and shape-checked.
pub fn load_encoder(flag: Option<&Path>) -> Result<(WeightSource, WeightFile)> {
    let src = locate_encoder(flag)?;
    let file = src.load()?;
    file.check(&encoder_shapes())?;
    Ok((src, file))
}

/// A zip-format `.pth` (PK magic) or a legacy pickle (0x80, protocol 2-5).
fn looks_like_pytorch(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
        || (bytes.len() > 1 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]))
}

/// Reads the tensors of a PyTorch checkpoint (zip format, or the legacy
/// format of PyTorch before 1.6: see [`read_legacy_pth`]): a bare state dict,
/// or a training checkpoint that wraps it under a common key. `module.`
/// prefixes (DataParallel) are stripped. Tensors come back as f32.
pub fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let p = path.display();
    let mut head = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("{p}: cannot read"))?;
        let n = f
            .read(&mut head)
            .with_context(|| format!("{p}: cannot read"))?;
        if n < 4 {
            bail!("{p}: empty or truncated file, not a PyTorch checkpoint");
        }
    }
    if head[0] == 0x80 {
        return read_legacy_pth(path);
    }
    if head != *b"PK\x03\x04" {
        bail!("{p}: not a PyTorch checkpoint (expected a zip-format .pth)");
    }
    check_zip_pickles(path)?;
    let file_len = std::fs::metadata(path)
        .with_context(|| format!("{p}: cannot read"))?
        .len();
    let mut found = None;
    for key in [
        None,
        Some("state_dict"),
        Some("decoder"),
        Some("model"),
        Some("model_state_dict"),
        Some("net"),
    ] {
        let Ok(pth) = candle_core::pickle::PthTensors::new(path, key) else {
            continue;
        };
        if !pth.tensor_infos().is_empty() {
            found = Some(pth);
            break;
        }
    }
    let pth = found.ok_or_else(|| anyhow!("{p}: no tensors found (not a state dict, nor one under `state_dict`/`decoder`/`model`)"))?;
    let mut names: Vec<String> = pth.tensor_infos().keys().cloned().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        // candle allocates the declared shape before reading: the data must
        // be in the file (the archive is stored, never compressed)
        let info = &pth.tensor_infos()[&name];
        tensor_bytes(info.layout.dims(), info.dtype)
            .and_then(|n| n.checked_add(info.layout.start_offset() as u64))
            .filter(|&n| n <= file_len)
            .ok_or_else(|| {
                anyhow!(
                    "{p}: tensor `{name}` declares a shape {:?} larger than the file",
                    info.layout.dims()
                )
            })?;
        let t = pth
            .get(&name)
            .map_err(|e| anyhow!("{p}: tensor `{name}`: {e}"))?
            .ok_or_else(|| anyhow!("{p}: tensor `{name}` missing"))?;
        let t = if t.dtype().is_float() {
            t.to_dtype(DType::F32)?
        } else {
            t
        };
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        out.push((name, t));
    }
    Ok(out)
}

/// Bytes of a tensor of `dims` and `dtype`; `None` when that overflows.
fn tensor_bytes(dims: &[usize], dtype: DType) -> Option<u64> {
    dims.iter().try_fold(dtype.size_in_bytes() as u64, |n, &d| {
        n.checked_mul(d as u64)
    })
}

/// Whether candle's `into_tensor_info` can take a state dict's value apart
/// without panicking: it indexes the argument tuples of
/// `_rebuild_from_type_v2` (3), `_rebuild_parameter` (1),
/// `_rebuild_tensor_v2` (4) and the storage's persistent id (5) unchecked.
fn rebuild_ok(o: &candle_core::pickle::Object) -> bool {
    use candle_core::pickle::Object;
    fn is(c: &Object, m: &str, n: &str) -> bool {
        matches!(c, Object::Class { module_name, class_name } if module_name == m && class_name == n)
    }
    fn tuple(a: &Object) -> Option<&[Object]> {
        match a {
            Object::Tuple(t) => Some(t),
            _ => None,
        }
    }
    let Object::Reduce { callable, args } = o else {
        return true;
    };
    let (mut callable, mut args): (&Object, &Object) = (callable, args);
    if is(callable, "torch._tensor", "_rebuild_from_type_v2") {
        match tuple(args) {
            Some(t) if t.len() >= 3 => (callable, args) = (&t[0], &t[2]),
            Some(_) => return false,
            None => return true, // candle's own error
        }
    } else if is(callable, "torch._utils", "_rebuild_parameter") {
        match tuple(args) {
            Some(
                [Object::Reduce {
                    callable: c,
                    args: a,
                }, ..],
            ) => (callable, args) = (c, a),
            Some([]) => return false,
            _ => return true,
        }
    }
    if !is(callable, "torch._utils", "_rebuild_tensor_v2") {
        return true;
    }
    match tuple(args) {
        Some(t) if t.len() >= 4 => match &t[0] {
            Object::PersistentLoad(id) => !matches!(id.as_ref(), Object::Tuple(s) if s.len() < 5),
            _ => true,
        },
        Some(_) => false,
        None => true,
    }
}

/// What unpickling one pickle may cost: candle's unpickler allocates a
/// string's declared length before reading it and clones a memo entry on
/// every get (so a few hundred bytes can ask for gigabytes), and its objects
/// are dropped recursively (so deep nesting can overflow the stack).
const PICKLE_MAX_WORK: u64 = 256 << 20;
const PICKLE_MAX_DEPTH: u32 = 256;

/// Walks the pickle at the start of `b` as candle's `Stack::read_loop` would,
/// tracking only each object's size (64 bytes a node plus its strings) and
/// nesting depth; refuses one whose strings run past the end of `b`, whose
/// objects (clones included) add up to more than [`PICKLE_MAX_WORK`] or nest
/// deeper than [`PICKLE_MAX_DEPTH`]. Where candle would stop with an error
/// (an unknown op-code, an empty stack, the end of the data) this stops too
/// and lets candle report it.
fn check_pickle(b: &[u8]) -> std::result::Result<(), String> {
    const NODE: u64 = 64;
    let mut stack: Vec<Option<(u64, u32)>> = Vec::new(); // None: a mark
    let mut memo: HashMap<u32, Option<(u64, u32)>> = HashMap::new();
    let (mut i, mut work) = (0usize, 0u64);
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
    // candle pops a mark as any other object
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(x) => x.unwrap_or((NODE, 0)),
                None => return Ok(()),
            }
        };
    }
    macro_rules! to_mark {
        () => {{
            let Some(m) = stack.iter().rposition(|x| x.is_none()) else {
                return Ok(());
            };
            let items: Vec<(u64, u32)> = stack.drain(m..).flatten().collect();
            items.iter().fold((0u64, 0u32), |(c, d), &(c2, d2)| {
                (c.saturating_add(c2), d.max(d2))
            })
        }};
    }
    let push = |stack: &mut Vec<Option<(u64, u32)>>, work: &mut u64, cost: u64, depth: u32| {
        *work = work.saturating_add(cost);
        stack.push(Some((cost, depth)));
    };
    loop {
        if work > PICKLE_MAX_WORK {
            return Err(format!(
                "objects of more than {} MiB",
                PICKLE_MAX_WORK >> 20
            ));
        }
        if let Some(Some((_, d))) = stack.last() {
            if *d > PICKLE_MAX_DEPTH {
                return Err(format!("objects nested deeper than {PICKLE_MAX_DEPTH}"));
            }
        }
        let Some(&[op]) = take(&mut i, 1) else {
            return Ok(());
        };
        match op {
            b'.' => return Ok(()), // STOP
            0x80 => {
                take(&mut i, 1);
            }
            b'c' => {
                // GLOBAL: two lines
                let mut n = 0u64;
                for _ in 0..2 {
                    let rest = &b[i.min(b.len())..];
                    let len = rest
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(rest.len(), |p| p + 1);
                    i += len;
                    n += len as u64;
                }
                push(&mut stack, &mut work, NODE + n, 0);
            }
            b'K' | b'M' | b'J' | b'G' => {
                let n = match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    _ => 8,
                };
                if take(&mut i, n).is_none() {
                    return Ok(());
                }
                push(&mut stack, &mut work, NODE, 0);
            }
            b'X' => {
                let Some(l) = take(&mut i, 4).map(u32_at) else {
                    return Ok(());
                };
                if take(&mut i, l as usize).is_none() {
                    return Err(format!("a string of {l} bytes runs past the end"));
                }
                push(&mut stack, &mut work, NODE + l as u64, 0);
            }
            0x8a => {
                // LONG1
                let Some(&[n]) = take(&mut i, 1) else {
                    return Ok(());
                };
                if take(&mut i, n as usize).is_none() {
                    return Ok(());
                }
                push(&mut stack, &mut work, NODE, 0);
            }
            b'(' => stack.push(None),
            // b'd' is EMPTY_DICT to candle, as b'}'
            0x88 | 0x89 | b'N' | b'}' | b'd' | b')' | b']' => push(&mut stack, &mut work, NODE, 0),
            b'Q' => {
                let (c, d) = pop!();
                push(&mut stack, &mut work, c + NODE, d + 1);
                work -= c; // moved, not copied
            }
            b't' => {
                let (c, d) = to_mark!();
                push(&mut stack, &mut work, c + NODE, d + 1);
                work -= c;
            }
            0x85 | 0x86 | 0x87 => {
                let (mut c, mut d) = (0u64, 0u32);
                for _ in 0..(op - 0x84) {
                    let (c2, d2) = pop!();
                    c = c.saturating_add(c2);
                    d = d.max(d2);
                }
                push(&mut stack, &mut work, c + NODE, d + 1);
                work -= c;
            }
            b'R' | b'b' | 0x81 => {
                let (c1, d1) = pop!();
                let (c2, d2) = pop!();
                let c = c1.saturating_add(c2);
                push(&mut stack, &mut work, c + NODE, d1.max(d2) + 1);
                work -= c;
            }
            b'a' | b's' | b'e' | b'u' => {
                let (c, d) = match op {
                    b'a' => pop!(),
                    b's' => {
                        let (c1, d1) = pop!();
                        let (c2, d2) = pop!();
                        (c1.saturating_add(c2), d1.max(d2))
                    }
                    _ => to_mark!(),
                };
                match stack.last_mut() {
                    Some(Some((lc, ld))) => {
                        *lc = lc.saturating_add(c);
                        *ld = (*ld).max(d + 1);
                    }
                    _ => return Ok(()),
                }
            }
            b'h' | b'j' => {
                let Some(k) = (if op == b'h' {
                    take(&mut i, 1).map(|s| s[0] as u32)
                } else {
                    take(&mut i, 4).map(u32_at)
                }) else {
                    return Ok(());
                };
                match memo.get(&k) {
                    Some(&Some((c, d))) => push(&mut stack, &mut work, c, d),
                    Some(None) => stack.push(None), // a memoized mark is a mark again
                    None => return Ok(()),
                }
            }
            b'q' | b'r' => {
                let Some(k) = (if op == b'q' {
                    take(&mut i, 1).map(|s| s[0] as u32)
                } else {
                    take(&mut i, 4).map(u32_at)
                }) else {
                    return Ok(());
                };
                let Some(&top) = stack.last() else {
                    return Ok(());
                };
                work = work.saturating_add(top.map_or(NODE, |t| t.0));
                memo.insert(k, top);
            }
            _ => return Ok(()), // candle: unknown op-code
        }
    }
}

/// Every tensor record of a zip-format checkpoint's pickles checked with
/// [`rebuild_ok`] before candle reads them.
fn check_zip_pickles(path: &Path) -> Result<()> {
    use candle_core::pickle::{Object, Stack};
    let p = path.display();
    let bad = |e: &dyn std::fmt::Display| anyhow!("{p}: not a readable PyTorch zip archive ({e})");
    let f = std::fs::File::open(path).with_context(|| format!("{p}: cannot read"))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| bad(&e))?;
    let names = zip
        .file_names()
        .map(|f| f.map(|f| f.into_owned()))
        .collect::<std::result::Result<Vec<String>, _>>()
        .map_err(|e| bad(&e))?;
    fn walk(o: &Object) -> bool {
        rebuild_ok(o)
            && match o {
                Object::Tuple(v) | Object::List(v) => v.iter().all(walk),
                Object::Dict(v) => v.iter().all(|(a, b)| walk(a) && walk(b)),
                Object::Reduce { callable, args } | Object::Build { callable, args } => {
                    walk(callable) && walk(args)
                }
                Object::PersistentLoad(o) => walk(o),
                _ => true,
            }
    }
    for name in names.iter().filter(|n| n.ends_with("data.pkl")) {
        let mut entry = zip.by_name(name).map_err(|e| bad(&e))?;
        // stored, never compressed: no bigger than the file
        let mut pkl = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut pkl).map_err(|e| bad(&e))?;
        check_pickle(&pkl).map_err(|e| anyhow!("{p}: {name}: {e}"))?;
        let mut st = Stack::empty();
        // an unreadable pickle is left for candle to report
        let Ok(obj) = st.read_loop(&mut &pkl[..]).and_then(|_| st.finalize()) else {
            continue;
        };
        if !walk(&obj) {
            bail!("{p}: {name}: malformed tensor record (too few arguments)");
        }
    }
    Ok(())
}

/// Keys a training checkpoint may wrap its state dict under.
const WRAPPER_KEYS: [&str; 5] = ["state_dict", "decoder", "model", "model_state_dict", "net"];

/// The legacy (pre-1.6, non-zip) `torch.save` format, as the published
/// `fast_neural_style` networks were saved: pickles of the magic number, the
/// protocol and the system info, then the object (tensors refer to their
/// storage by a persistent id `("storage", type, key, location, size, ..)`),
/// then the list of storage keys, then per key an 8-byte element count and
/// the raw little-endian data. Parsed with candle's unpickler; only
/// contiguous tensors (what a state dict holds) are read.
pub fn read_legacy_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    use candle_core::pickle::{Object, Stack};
    let p = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read"))?;
    let mut r = std::io::Cursor::new(&bytes[..]);
    let mut next = |what: &str| -> Result<Object> {
        let rest = bytes.get(r.position() as usize..).unwrap_or_default();
        check_pickle(rest)
            .map_err(|e| anyhow!("{p}: legacy PyTorch file, cannot read its {what} ({e})"))?;
        let mut st = Stack::empty();
        st.read_loop(&mut r)
            .and_then(|_| st.finalize())
            .map_err(|e| anyhow!("{p}: legacy PyTorch file, cannot read its {what} ({e})"))
    };
    for what in ["magic number", "protocol", "system info"] {
        next(what)?;
    }
    let obj = next("object")?;
    let keys = match next("storage keys")? {
        Object::List(v) => v
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|_| anyhow!("{p}: a storage key is not a string"))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => bail!("{p}: legacy PyTorch file without a storage key list"),
    };
    // storage key -> element size, from every persistent id in the object
    fn storages(o: &Object, out: &mut HashMap<String, usize>) {
        match o {
            Object::PersistentLoad(id) => {
                if let Object::Tuple(t) = id.as_ref() {
                    if let (Some(Object::Class { class_name, .. }), Some(Object::Unicode(k))) =
                        (t.get(1), t.get(2))
                    {
                        let size = match class_name.as_str() {
                            "DoubleStorage" | "LongStorage" => 8,
                            "FloatStorage" | "IntStorage" => 4,
                            "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
                            _ => 1,
                        };
                        out.insert(k.clone(), size);
                    }
                }
            }
            Object::Tuple(v) | Object::List(v) => v.iter().for_each(|x| storages(x, out)),
            Object::Dict(v) => v.iter().for_each(|(a, b)| {
                storages(a, out);
                storages(b, out)
            }),
            Object::Reduce { callable, args } | Object::Build { callable, args } => {
                storages(callable, out);
                storages(args, out)
            }
            _ => {}
        }
    }
    let mut elem = HashMap::new();
    storages(&obj, &mut elem);
    let mut data: HashMap<String, &[u8]> = HashMap::new();
    let mut pos = r.position() as usize;
    for k in &keys {
        let size = *elem
            .get(k)
            .ok_or_else(|| anyhow!("{p}: storage `{k}` is not used by the object"))?;
        let truncated = || anyhow!("{p}: truncated (storage `{k}`)");
        let n = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(truncated)?;
        // the declared element count comes from the file: no wrap-around
        let end = n
            .checked_mul(size as u64)
            .and_then(|len| len.checked_add(pos as u64 + 8))
            .filter(|&end| end <= bytes.len() as u64)
            .ok_or_else(truncated)? as usize;
        data.insert(k.clone(), &bytes[pos + 8..end]);
        pos = end;
    }
    // the state dict: the object itself, or under a wrapper key
    let dict_of = |o: Object| match o {
        Object::Dict(v) => Some(v),
        _ => None,
    };
    let mut entries = dict_of(obj).ok_or_else(|| anyhow!("{p}: not a state dict"))?;
    let is_tensor = |v: &Object| matches!(v, Object::Reduce { callable, .. } if matches!(callable.as_ref(), Object::Class { class_name, .. } if class_name.starts_with("_rebuild_")));
    if !entries.iter().any(|(_, v)| is_tensor(v)) {
        let wrapped = entries.into_iter().find_map(|(k, v)| match k {
            Object::Unicode(k) if WRAPPER_KEYS.contains(&k.as_str()) => dict_of(v),
            _ => None,
        });
        entries = wrapped.ok_or_else(|| anyhow!("{p}: no tensors found (not a state dict, nor one under `state_dict`/`decoder`/`model`)"))?;
    }
    let mut out = Vec::new();
    for (name, value) in entries {
        // PyTorch 0.3's `_rebuild_tensor` takes the first four arguments of `_v2`.
        let value = match value {
            Object::Reduce { callable, args } => match *callable {
                Object::Class {
                    module_name,
                    class_name,
                } if class_name == "_rebuild_tensor" => Object::Reduce {
                    callable: Box::new(Object::Class {
                        module_name,
                        class_name: "_rebuild_tensor_v2".into(),
                    }),
                    args,
                },
                c => Object::Reduce {
                    callable: Box::new(c),
                    args,
                },
            },
            v => v,
        };
        if !rebuild_ok(&value) {
            bail!("{p}: tensor record {name:?} is malformed (too few arguments)");
        }
        let Some(info) = value
            .into_tensor_info(name, Path::new(""))
            .map_err(|e| anyhow!("{p}: {e}"))?
        else {
            continue;
        };
        let key = info.path.trim_start_matches('/');
        let block = data
            .get(key)
            .ok_or_else(|| anyhow!("{p}: tensor `{}`: no storage `{key}`", info.name))?;
        if !info.layout.is_contiguous() {
            bail!("{p}: tensor `{}` is not contiguous", info.name);
        }
        // candle keeps the storage offset in bytes
        let start = info.layout.start_offset();
        let outside = || anyhow!("{p}: tensor `{}` lies outside its storage", info.name);
        let len = tensor_bytes(info.layout.dims(), info.dtype).ok_or_else(outside)? as usize;
        let raw = start
            .checked_add(len)
            .and_then(|end| block.get(start..end))
            .ok_or_else(outside)?;
        let t = Tensor::from_raw_buffer(raw, info.dtype, info.layout.dims(), &Device::Cpu)
            .map_err(|e| anyhow!("{p}: tensor `{}`: {e}", info.name))?;
        let t = if t.dtype().is_float() {
            t.to_dtype(DType::F32)?
        } else {
            t
        };
        let name = info
            .name
            .strip_prefix("module.")
            .unwrap_or(&info.name)
            .to_string();
        out.push((name, t));
    }
    if out.is_empty() {
        bail!("{p}: no tensors found in this legacy PyTorch file");
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What a set of tensor names looks like.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Decoder,
    Encoder,
    /// Johnson et al.'s network with `fast_neural_style`'s keys.
    Johnson,
    Other,
}

pub fn classify(names: &[&str]) -> Kind {
    let has = |k: &str| names.contains(&k);
    if Decoder::tensor_shapes().iter().all(|(k, _)| has(k)) {
        Kind::Decoder
    } else if encoder_shapes().iter().all(|(k, _)| has(k)) {
        Kind::Encoder
    } else if TransformerNet::tensor_shapes().iter().all(|(k, _)| has(k)) {
        Kind::Johnson
    } else {
        Kind::Other
    }
}

fn refuse_same_file(input: &Path, output: &Path) -> Result<()> {
    if input.canonicalize().ok().is_some()
        && input.canonicalize().ok() == output.canonicalize().ok()
    {
        bail!("{}: refusing to write over the input", output.display());
    }
    Ok(())
}

/// `adain convert` of a safetensors file: the same tensors, in their own
/// dtypes, and metadata, written with the [`META_TENSORS_SHA`] checksum (how
/// a file from before checksums, or from another tool, gets one). The input
/// is verified first when it has a checksum.
pub fn add_checksum(input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    refuse_same_file(input, output)?;
    let p = input.display();
    let checked = WeightFile::load(input)?;
    let bytes = std::fs::read(input).with_context(|| format!("{p}: cannot read"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{p}: not a valid safetensors file ({e})"))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = checked.tensors[&name].dtype();
        let dtype = match view.dtype() {
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            _ => dtype,
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| anyhow!("{p}: tensor `{name}`: {e}"))?;
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(output, &tensors, &checked.metadata, overwrite)
}

/// `adain convert`: a PyTorch checkpoint to safetensors. A recognised decoder,
/// encoder or Johnson network (`fast_neural_style`) is shape-checked; a
/// decoder gets decoder metadata (its encoder is unknown: the reference's
/// `vgg_normalised`, which is not ours); a Johnson network loses the
/// instance norms' `running_mean`/`running_var` of old files, as the
/// example's `stylize.py` drops them, and must then hold nothing else.
pub fn convert_pth(input: &Path, output: &Path, overwrite: bool) -> Result<Kind> {
    refuse_same_file(input, output)?;
    let mut tensors = read_pth(input)?;
    let names: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    let kind = classify(&names);
    let expected = match kind {
        Kind::Decoder => Decoder::tensor_shapes(),
        Kind::Encoder => encoder_shapes(),
        Kind::Johnson => TransformerNet::tensor_shapes(),
        Kind::Other => vec![],
    };
    if kind == Kind::Johnson {
        tensors.retain(|(k, _)| !TransformerNet::is_stale_key(k));
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(k, _)| k.as_str()).collect();
        if let Some((k, _)) = tensors.iter().find(|(k, _)| !known.contains(k.as_str())) {
            bail!(
                "{}: looks like a fast_neural_style network but has an unknown tensor `{k}`",
                input.display()
            );
        }
    }
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    WeightFile {
        path: input.to_owned(),
        tensors: map,
        metadata: BTreeMap::new(),
    }
    .check(&expected)?;
    let source = input
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta = match kind {
        Kind::Decoder => {
            let mut m = decoder_metadata(
                "unknown",
                &format!("{{\"converted_from\":\"{source}\"}}"),
                0,
            );
            m.remove(META_ITER);
            m
        }
        Kind::Johnson => BTreeMap::from([
            ("converted_from".to_string(), source),
            (META_FORMAT.to_string(), crate::johnson::FORMAT.to_string()),
        ]),
        _ => BTreeMap::from([("converted_from".to_string(), source)]),
    };
    save_safetensors(output, &tensors, &meta, overwrite)?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors header length is little-endian, so its first byte is
    /// arbitrary: a file starting with 0x80 (a pickle's first byte) must
    /// still load. Metadata of growing length walks the first byte through
    /// every value.
    #[test]
    fn any_header_length_loads() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        let mut seen = std::collections::HashSet::new();
        for n in 0..300 {
            let path = dir.path().join(format!("{n}.safetensors"));
            let meta = BTreeMap::from([("pad".to_string(), "x".repeat(n))]);
            save_safetensors(&path, &[("w".into(), t.clone())], &meta, true).unwrap();
            seen.insert(std::fs::read(&path).unwrap()[0]);
            let f = WeightFile::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(f.metadata["pad"].len(), n);
        }
        assert!(seen.contains(&0x80), "no header started with 0x80");
    }

    /// One flipped byte anywhere in the tensor data is an error naming the
    /// file; a file without the checksum (written by another tool) loads.
    #[test]
    fn flipped_tensor_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::arange(0f32, 64., &Device::Cpu).unwrap();
        let u = Tensor::ones((4, 4), DType::F16, &Device::Cpu).unwrap();
        let tensors = [("a".to_string(), t.clone()), ("b".to_string(), u)];
        save_safetensors(&path, &tensors, &BTreeMap::new(), true).unwrap();
        let good = std::fs::read(&path).unwrap();
        let f = WeightFile::from_bytes(&good, &path).unwrap();
        assert_eq!(
            f.metadata[META_TENSORS_SHA],
            hex_sha256(data_section(&good))
        );
        let data_start = good.len() - data_section(&good).len();
        for i in [data_start, data_start + 77, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            let e = format!("{:#}", WeightFile::from_bytes(&bad, &path).err().unwrap());
            assert!(e.contains("w.safetensors: corrupted"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // the same tensors from safetensors itself: no checksum, still loads
        let plain = safetensors::serialize([("a", &t)], None).unwrap();
        let f = WeightFile::from_bytes(&plain, &path).unwrap();
        assert!(!f.metadata.contains_key(META_TENSORS_SHA));
        assert_eq!(
            f.tensors["a"].to_vec1::<f32>().unwrap(),
            t.to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn pickles_and_zips_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("a.pth", &b"\x80\x02}q\x00."[..]),
            ("b.pth", b"PK\x03\x04rest"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let e = format!("{:#}", WeightFile::load(&path).err().unwrap());
            assert!(e.contains("is a PyTorch checkpoint"), "{e}");
        }
    }
}
