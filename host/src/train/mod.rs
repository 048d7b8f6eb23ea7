//! QLoRA training (in progress): the differentiable ops of the training forward pass and the
//! LoRA layer. The trainer, optimizer and `medtune train` come next (see issue notes).

pub mod lora;
pub mod ops;
