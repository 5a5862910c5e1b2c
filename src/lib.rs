//! aelabel: semi-supervised image labelling.
//!
//! A stacked autoencoder is pretrained on every image without labels, its encoder is copied
//! into a softmax classifier that is fine-tuned on the few labelled images, and the result is
//! served over gRPC. See `README.md` for the commands and `ARCHITECTURE` notes in each module.

pub mod cli;
pub mod client;
pub mod config;
pub mod data;
pub mod inference;
pub mod jobs;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod train;
pub mod wire;
