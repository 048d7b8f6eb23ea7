//! QLoRA training (in progress): LoRA adapters on every linear layer, trained through the
//! model's differentiable forward pass, saved in PEFT's layout. The trainer loop, schedules
//! and `medtune train` come next (see issue notes).

pub mod lora;
