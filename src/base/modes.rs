//! The modes a config or a deployment chooses from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a container gets the GPU. Config key `gpu.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuMode {
    /// CDI when a valid spec matches the live `/dev`, else CSV, else `nvidia-container-runtime`, else an error
    /// saying what is missing.
    #[default]
    Auto,
    /// Apply the edits of a CDI spec from `/etc/cdi` or `/var/run/cdi`.
    Cdi,
    /// Build the edits from the Jetson CSV files (JetPack 4/5/6 without a CDI spec).
    Csv,
    /// Hand the bundle to `nvidia-container-runtime` with `NVIDIA_VISIBLE_DEVICES`.
    NvidiaRuntime,
    /// No GPU.
    Off,
}

impl fmt::Display for GpuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cdi => "cdi",
            Self::Csv => "csv",
            Self::NvidiaRuntime => "nvidia-runtime",
            Self::Off => "off",
        })
    }
}

/// IPC namespace choice. `Host` shares the host's System V IPC and /dev/shm (what PyTorch data loaders need).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpcMode {
    #[default]
    Host,
    Private,
}

/// Network namespace choice. `Host` shares the host's network stack, resolv.conf and hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Host,
    /// A network namespace of its own with only loopback.
    None,
    /// A network namespace of its own on the agent's bridge (native: the CNI bridge plugin; Docker: the
    /// Engine's default bridge), reachable from the host through published ports.
    Bridge,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
