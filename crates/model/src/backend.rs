//! Run-time choice of the burn backend: one code path, three devices.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, DeviceKind};

use crate::error::{Error, Result};

/// The backends burnlens is built with. The choice is made at run time (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// `burn-ndarray`, the classic CPU backend (deprecated upstream in favour of flex).
    NdArray,
    /// `burn-flex`, the pure-Rust CPU backend that succeeds ndarray.
    Flex,
    /// `burn-wgpu`: any GPU through Vulkan/Metal/DX12, or Mesa's lavapipe on a CPU-only machine.
    Wgpu,
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [BackendKind; 3] = [Self::NdArray, Self::Flex, Self::Wgpu];

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NdArray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
        }
    }

    /// A device of this backend.
    ///
    /// # Errors
    /// [`Error::BackendUnavailable`] for wgpu when no adapter (GPU or lavapipe) exists.
    pub fn device(&self) -> Result<Device> {
        match self {
            // Deprecated upstream in favour of flex, and kept on purpose: users compare the two.
            #[allow(deprecated)]
            Self::NdArray => Ok(Device::ndarray()),
            Self::Flex => Ok(Device::flex()),
            Self::Wgpu => {
                if wgpu_adapter_available() {
                    Ok(Device::wgpu(DeviceKind::DefaultDevice))
                } else {
                    Err(Error::BackendUnavailable(
                        "wgpu found no adapter: no GPU and no Vulkan driver. On a machine without a GPU, \
                         install Mesa's lavapipe (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)"
                            .into(),
                    ))
                }
            }
        }
    }
}

/// Whether wgpu can open an adapter here (a GPU, or lavapipe on the CPU).
pub fn wgpu_adapter_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::panic::catch_unwind(|| !Device::enumerate(burn::tensor::DeviceType::Wgpu).is_empty())
            .unwrap_or(false)
    })
}

/// The devices of every backend that can run here, for tests and `--backend all`: ndarray,
/// flex, and wgpu when an adapter exists. Without one, wgpu is left out with a message on
/// stderr saying why, or this panics when `BURNLENS_REQUIRE_WGPU=1` (as CI sets it, so that a
/// missing lavapipe cannot pass unnoticed).
pub fn available_devices() -> Vec<(BackendKind, Device)> {
    let mut out = Vec::new();
    for kind in BackendKind::ALL {
        if kind == BackendKind::Wgpu && !wgpu_adapter_available() {
            if std::env::var("BURNLENS_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
                panic!(
                    "BURNLENS_REQUIRE_WGPU=1 but wgpu found no adapter (install mesa-vulkan-drivers for lavapipe)"
                );
            }
            eprintln!(
                "SKIP wgpu: no wgpu adapter on this machine (no GPU, no lavapipe); set BURNLENS_REQUIRE_WGPU=1 to make this an error"
            );
            continue;
        }
        out.push((
            kind,
            kind.device()
                .expect("a backend with an adapter has a device"),
        ));
    }
    out
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" => Ok(Self::NdArray),
            "flex" => Ok(Self::Flex),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(Error::InvalidOption(format!(
                "unknown backend {other:?}: expected ndarray, flex or wgpu"
            ))),
        }
    }
}
